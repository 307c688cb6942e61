"""NVIDIA Dynamo `DynamoGraphDeployment` (nvidia.com/v1alpha1): a Frontend (OpenAI HTTP + router) and engine workers.

Read from ai-dynamo/dynamo (the repository snapshot is over the fetch limit; files read one by one):
- deploy/cloud/operator/api/v1alpha1/dynamographdeployment_types.go (039eb63) and dynamocomponentdeployment_types.go
  (0200730): spec.services maps a service name to its DynamoComponentDeploymentSharedSpec (componentType, replicas,
  resources.limits.gpu as a string, envs, extraPodSpec.mainContainer, multinode.nodeCount >= 2 with "total number
  of GPUs is NumberOfNodes * GPU limit"); spec.backendFramework is one of sglang, vllm, trtllm.
- components/backends/vllm/deploy/disagg.yaml (0bb3389): Frontend runs `python3 -m dynamo.frontend --http-port
  8000`; workers run `python3 -m dynamo.vllm --model <model> <vLLM engine args>` (decode) and the same with
  `--is-prefill-worker` (prefill), each a shell line in mainContainer.args.
The schema we validate against is written from those Go types (tests/data/k8s/dynamographdeployment-v1alpha1
.schema.json); pod specs are checked as core/v1.
"""

import shlex
from typing import Optional

import yaml

from backends.deploy.base import DeployTable, Deployment, EngineArgs, Placement, engine_flags, engine_unsupported
from backends.deploy.base import gpus_per_node
from backends.k8s import SECRET_NAME
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

FILE = "dynamographdeployment.yaml"
TYPES = "ai-dynamo/dynamo deploy/cloud/operator/api/v1alpha1/dynamocomponentdeployment_types.go (0200730)"
EXAMPLE = "ai-dynamo/dynamo components/backends/vllm/deploy/disagg.yaml (0bb3389)"
IMAGE = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.3.2"  # the image the example names
IMAGE_SGLANG = "nvcr.io/nvidia/ai-dynamo/sglang-runtime:0.3.2"
WORKERS = {BackendName.vllm: ("VllmWorker", "dynamo.vllm", "--model", IMAGE),
           BackendName.sglang: ("SGLangWorker", "dynamo.sglang", "--model-path", IMAGE_SGLANG)}
# Disaggregated: a prefill and a decode worker service. vLLM: `--is-prefill-worker` on the prefill worker (EXAMPLE;
# dynamo.vllm sets up the NIXL connector itself); SGLang: its own --disaggregation-mode and transfer backend
# (SGLANG_DISAGG). Dynamo moves KV with NIXL.
SGLANG_DISAGG = "ai-dynamo/dynamo components/backends/sglang/deploy/disagg_planner.yaml (00d479d)"
ROLE_WORKERS = {
    (BackendName.vllm, "prefill"): ("VllmPrefillWorker", ("--is-prefill-worker",)),
    (BackendName.vllm, "decode"): ("VllmDecodeWorker", ()),
    (BackendName.sglang, "prefill"): ("SGLangPrefillWorker", ("--disaggregation-mode", "prefill",
                                                              "--disaggregation-transfer-backend", "nixl")),
    (BackendName.sglang, "decode"): ("SGLangDecodeWorker", ("--disaggregation-mode", "decode",
                                                            "--disaggregation-transfer-backend", "nixl")),
}


def worker_keys(plan: Plan) -> tuple:
    """Where the plan's own (decode) worker service sits in the file."""
    if plan.disaggregation is not None:
        return ("spec", "services", ROLE_WORKERS[plan.backend, "decode"][0])
    return ("spec", "services", WORKERS[plan.backend][0])


def _table(plan: Plan, gpu: GpuSpec) -> DeployTable:
    worker = worker_keys(plan)
    rows = [
        Placement("replicas", FILE, (*worker, "replicas"), lambda p: p.replicas, TYPES),
        Placement("gpus_per_replica", FILE, (*worker, "resources", "limits", "gpu"), lambda p: str(gpus_per_node(p)),
                  f"{TYPES}: ResourceItem.GPU, per node of a multinode component"),
        Placement("model_path", FILE, (*worker, "extraPodSpec", "mainContainer", "args", 0),
                  lambda p: f"{WORKERS[p.backend][2]} {shlex.quote(p.model_path)}", EXAMPLE),
    ]
    if plan.nodes > 1:
        rows.append(Placement("nodes", FILE, (*worker, "multinode", "nodeCount"), lambda p: p.nodes, TYPES))
    if plan.disaggregation is not None:
        prefill = ("spec", "services", ROLE_WORKERS[plan.backend, "prefill"][0])
        rows += [Placement("disaggregation.prefill.replicas", FILE, (*prefill, "replicas"),
                           lambda p: p.disaggregation.prefill.replicas, TYPES),
                 Placement("disaggregation.prefill.gpus_per_replica", FILE, (*prefill, "resources", "limits", "gpu"),
                           lambda p: str(p.disaggregation.prefill.gpus_per_replica), TYPES)]
    return DeployTable(plan.backend, EngineArgs(FILE, (*worker, "extraPodSpec", "mainContainer", "args", 0),
                                                ("--distributed-executor-backend",),
                                                f"{EXAMPLE}: the worker's shell line"), tuple(rows))


def worker_line(plan: Plan, taken: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    """`python3 -m dynamo.<engine> --model <model> <engine flags>` as one shell line."""
    _, module, model_flag, _ = WORKERS[plan.backend]
    words = ("python3", "-m", module, model_flag, plan.model_path, *engine_flags(plan, taken).argv, *extra)
    return shlex.join(words)


def service(plan: Plan, line: str, replicas: int, gpu_count: int, nodes: int) -> dict:
    """One Dynamo worker service running `line` on `gpu_count` GPUs per node."""
    svc: dict = {
        "componentType": "worker", "replicas": replicas, "envFromSecret": SECRET_NAME,
        "resources": {"requests": {"gpu": str(gpu_count)}, "limits": {"gpu": str(gpu_count)}},
        "extraPodSpec": {"mainContainer": {"image": WORKERS[plan.backend][3], "args": [line]}},
    }
    if nodes > 1:
        svc["multinode"] = {"nodeCount": nodes}
    return svc


def graph(name: str, plan: Plan, services: dict) -> dict:
    """The DynamoGraphDeployment with a Frontend (KV-aware router) in front of `services`."""
    frontend = {"componentType": "frontend", "replicas": 1,
                "extraPodSpec": {"mainContainer": {"image": WORKERS[plan.backend][3],
                                                   "args": ["python3 -m dynamo.frontend --http-port 8000 "
                                                            "--router-mode kv"]}}}
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": name},
            "spec": {"backendFramework": plan.backend.value, "services": {"Frontend": frontend, **services}}}


def _role_services(plan: Plan, taken: tuple[str, ...]) -> dict:
    """A prefill and a decode worker service, each its pool's plan (backends/disagg.py role_plan) with its role
    flags (ROLE_WORKERS)."""
    from backends.disagg import ROLES, role_plan

    pools = {"prefill": plan.disaggregation.prefill, "decode": plan.disaggregation.decode}
    out = {}
    for role in ROLES:
        svc_name, extra = ROLE_WORKERS[plan.backend, role]
        rp = role_plan(plan, role)
        out[svc_name] = service(rp, worker_line(rp, taken, extra), pools[role].replicas,
                                pools[role].gpus_per_replica, 1)
    return out


def _scaling(plan: Plan, name: str, graph_obj: dict) -> dict:
    """KEDA ScaledObjects on the worker services' DynamoGraphDeploymentScalingAdapters, which the operator names
    `<graph>-<service in lower case>` (dynamographdeployment controller generateAdapterName; adapter types 6746518)."""
    from backends import autoscale_k8s

    services = [s for s in graph_obj["spec"]["services"] if s != "Frontend"]
    pool = {s: ("prefill" if "Prefill" in s else "decode" if "Decode" in s else "replicas") for s in services}
    targets = {pool[s]: {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeploymentScalingAdapter",
                         "name": f"{name}-{s.lower()}"} for s in services}
    return autoscale_k8s.files(plan, targets)


class Dynamo:
    name = "dynamo"
    title = "NVIDIA Dynamo DynamoGraphDeployment"
    engines = (BackendName.vllm, BackendName.sglang)

    def table(self, plan: Plan, gpu: GpuSpec) -> DeployTable:
        return _table(plan, gpu)

    def unsupported(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        reason = engine_unsupported(self.name, self.engines, plan, EXAMPLE)
        if reason:
            return reason
        if gpu.vendor != "nvidia":
            return f"deploy=dynamo: Dynamo's runtime images are CUDA builds, {gpu.name} is not an NVIDIA GPU"
        if plan.disaggregation is not None and plan.disaggregation.kv_connector != "nixl":
            return (f"deploy=dynamo moves KV with NIXL; the plan's kv_connector is {plan.disaggregation.kv_connector} "
                    f"[source: {EXAMPLE}; {SGLANG_DISAGG}]. Fix: plan.kv_connector=nixl")
        return None

    def render(self, plan: Plan, name: str, gpu: GpuSpec) -> Deployment:
        table = _table(plan, gpu)
        if plan.disaggregation is not None:
            obj = graph(name, plan, _role_services(plan, table.engine_args.taken))
        else:
            line = worker_line(plan, table.engine_args.taken)
            worker = service(plan, line, plan.replicas, gpus_per_node(plan), plan.nodes)
            obj = graph(name, plan, {WORKERS[plan.backend][0]: worker})
        notes = ("deploy=dynamo: needs the Dynamo operator and its NATS/etcd platform chart in the cluster; the "
                 "Frontend routes by KV-cache overlap (--router-mode kv).",)
        return Deployment(self.name, {FILE: yaml.safe_dump(obj, sort_keys=False, width=1000),
                                      **_scaling(plan, name, obj)}, notes)


TARGET = Dynamo()
