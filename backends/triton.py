"""Triton Inference Server, shared by its two adapters (triton_trtllm, triton_vllm): config.pbtxt in protobuf text
format (Triton's ModelConfig message, model_config.proto), the `tritonserver` command, the NGC images, readiness
and metrics.

Triton (triton-inference-server/server docs/user_guide: model_repository.md, model_configuration.md, metrics.md):
a model repository holds one folder per model with config.pbtxt and a version folder `1/`; `tritonserver
--model-repository=DIR` serves HTTP on 8000, gRPC on 8001 and Prometheus metrics on 8002 (`/metrics`); readiness is
`GET /v2/health/ready` (KServe v2 protocol), 200 once every model loaded.
"""

from __future__ import annotations

from typing import Union

RELEASE = "26.10"  # Triton container release (docs.nvidia.com Triton Inference Server Release 26.10 notes)
IMAGE_TRTLLM = f"nvcr.io/nvidia/tritonserver:{RELEASE}-trtllm-python-py3"  # NGC tritonserver tags <yy.mm>-trtllm-...
IMAGE_VLLM = f"nvcr.io/nvidia/tritonserver:{RELEASE}-vllm-python-py3"  # vllm_backend README "Option 1"
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
HEALTH_PATH = "/v2/health/ready"
METRICS_PATH = "/metrics"  # on METRICS_PORT, not the HTTP port
REPO = "model_repository"
SERVER = "tritonserver"
PORTS = (f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}", f"--metrics-port={METRICS_PORT}")
NOTE_METRICS = (f"Triton serves Prometheus metrics on port {METRICS_PORT} ({METRICS_PATH}), not on the HTTP port "
                f"{HTTP_PORT}; readiness is {HEALTH_PATH}. Clients use Triton's KServe v2 API "
                "(/v2/models/<model>/generate, generate_stream), not the OpenAI API.")

Value = Union[str, int, float, bool, "Sym", dict, list]


class Sym(str):
    """An enum value of model_config.proto (TYPE_INT32, KIND_CPU): written without quotes."""


def pbtxt(message: dict, indent: int = 0) -> str:
    """`message` in protobuf text format: scalars `key: value`, messages `key { ... }`, repeated messages
    `key [ {...}, {...} ]`, repeated scalars `key: [ a, b ]` (what Triton's own config.pbtxt files use)."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = [f"{pad}  {{\n{pbtxt(v, indent + 2)}{pad}  }}" for v in value]
            lines.append(f"{pad}{key} [\n" + ",\n".join(items) + f"\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value: Value) -> str:
    if isinstance(value, Sym):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def parameters(values: dict) -> list:
    """ModelConfig.parameters (map<string, ModelParameter>) as text format's repeated key/value entries; every value
    a string_value, as the backends read them."""
    return [{"key": k, "value": {"string_value": _param(v)}} for k, v in values.items()]


def _param(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def tensor(name: str, dtype: str, dims: list, optional: bool = False, **extra) -> dict:
    """One ModelInput/ModelOutput."""
    out = {"name": name, "data_type": Sym(dtype), "dims": dims}
    if optional:
        out["optional"] = True
    out.update(extra)
    return out


def serve_command(repo: str, world_size: int = 1, rank_models: tuple[str, ...] = ()) -> tuple[str, ...]:
    """`tritonserver --model-repository=REPO` with the three ports; with world_size > 1 one MPI rank per GPU, rank 0
    serving every model and the others only `rank_models` (the layout TensorRT-LLM's
    triton_backend/scripts/launch_triton_server.py get_cmd builds: mpirun -n 1 ... : -n 1 ...)."""
    if world_size == 1:
        return (SERVER, f"--model-repository={repo}", *PORTS)
    words = ["mpirun", "--allow-run-as-root"]
    for rank in range(world_size):
        words += ["-n", "1", SERVER, f"--model-repository={repo}", *PORTS]
        if rank:
            words += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in rank_models)]
        words += ["--disable-auto-complete-config", f"--backend-config=python,shm-region-prefix-name=prefix{rank}_"]
        if rank < world_size - 1:
            words.append(":")
    return tuple(words)
