"""The closed vocabularies of the planner's inputs and plans: GPU architectures, device kinds, interconnects,
objectives, weight and KV-cache formats, backends, deploy stacks, actions. planner/specs.py re-exports them."""

import enum


class Arch(str, enum.Enum):
    """GPU (or CPU) micro-architecture; decides which number formats the hardware runs natively."""

    volta = "volta"
    turing = "turing"
    ampere = "ampere"
    ada = "ada"
    hopper = "hopper"
    blackwell = "blackwell"
    cdna3 = "cdna3"  # AMD Instinct MI300X / MI325X (gfx942)
    cdna4 = "cdna4"  # AMD Instinct MI350X / MI355X (gfx950)
    cpu = "cpu"


class DeviceKind(str, enum.Enum):
    gpu = "gpu"
    cpu = "cpu"


class Interconnect(str, enum.Enum):
    """How the devices of one node talk to each other."""

    nvlink = "nvlink"
    pcie = "pcie"
    xgmi = "xgmi"
    none = "none"


class Objective(str, enum.Enum):
    latency = "latency"
    throughput = "throughput"
    cost = "cost"


class Weights(str, enum.Enum):
    """Weight precision asked for in precision/ (auto: the planner chooses)."""

    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    float32 = "float32"
    fp8 = "fp8"
    int8 = "int8"
    awq = "awq"
    gptq = "gptq"
    nvfp4 = "nvfp4"


class KvPrecision(str, enum.Enum):
    """KV-cache element type asked for in precision/ (auto: the compute dtype, unless a rule chooses fp8)."""

    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    float32 = "float32"
    fp8 = "fp8"


class Dtype(str, enum.Enum):
    """Compute (activation) dtype of the plan."""

    bf16 = "bf16"
    fp16 = "fp16"
    float32 = "float32"


class Quantization(str, enum.Enum):
    """Weight quantization of the plan (none: weights in the compute dtype). A quantized checkpoint's format maps to
    one of these (planner/quantconfig.py): fp8 W8A8/W8A16 (any scale layout), int8 W8A8, gptq = integer weight-only
    without zero points (GPTQ, compressed-tensors W4A16/W8A16), awq = integer weight-only with zero points, nvfp4,
    mxfp4 (gpt-oss), bitsandbytes (NF4/INT8, SGLang and TGI)."""

    none = "none"
    fp8 = "fp8"
    int8 = "int8"
    awq = "awq"
    gptq = "gptq"
    nvfp4 = "nvfp4"
    mxfp4 = "mxfp4"
    bitsandbytes = "bitsandbytes"


class BackendName(str, enum.Enum):
    auto = "auto"
    vllm = "vllm"
    trtllm = "trtllm"
    tgi = "tgi"
    sglang = "sglang"
    triton_trtllm = "triton-trtllm"  # Triton Inference Server + TensorRT-LLM's backend (backends/triton_trtllm.py)
    triton_vllm = "triton-vllm"  # Triton Inference Server + its vLLM backend (backends/triton_vllm.py)
    mii = "mii"  # DeepSpeed-MII (backends/mii.py): served only when asked (rule backend.mii-when-asked)


class DeployTarget(str, enum.Enum):
    """`deploy=`: the cluster stack action=render writes files for (backends/deploy/), or all of them."""

    kserve = "kserve"
    llmd = "llmd"
    dynamo = "dynamo"
    lws = "lws"
    ray = "ray"
    slurm = "slurm"
    all = "all"


class Profiler(str, enum.Enum):
    """`profile=`: the profiler the server launch runs under (planner/profile.py)."""

    nsys = "nsys"


class Action(str, enum.Enum):
    plan = "plan"
    render = "render"
    launch = "launch"
    verify = "verify"
    explain = "explain"
    rules = "rules"
    diagnose = "diagnose"
    preflight = "preflight"  # nccl-tests output (log=FILE) against the plan's communication model


class Format(str, enum.Enum):
    table = "table"
    json = "json"
    yaml = "yaml"
