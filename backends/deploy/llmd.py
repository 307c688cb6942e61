"""llm-d: Helm values for the llm-d-modelservice chart (the model servers of llm-d's well-lit paths).

Read from llm-d-incubation/llm-d-modelservice at 3051935 (chart v0.4.12; its values.schema.json is vendored in
tests/data/k8s/llmd-modelservice-values.schema.json.gz):
- charts/llm-d-modelservice/templates/_helpers.tpl `vllmServeModelCommand`: with `modelCommand: vllmServe` the chart
  runs `vllm serve <model> --port <vllmPort> [--tensor-parallel-size <parallelism.tensor>] [--data-parallel-size
  <parallelism.data>] [--data-parallel-size-local <parallelism.dataLocal>] --served-model-name
  <modelArtifacts.name>` followed by the container's `args`; GPUs per pod = dataLocal x tensor.
- `multinode: true` renders LeaderWorkerSets whose `parallelism.workers` pods are data-parallel ranks (wide-EP);
  the chart passes no --pipeline-parallel-size, so a tensor/pipeline group spanning nodes is not served this way.
- examples/values-pd.yaml: prefill and decode pools (`prefill.create`), each with its own parallelism and replicas.
Intelligent scheduling (the llm-d inference scheduler, an InferencePool) is the separate `inferencepool` chart of
the Gateway API Inference Extension; it selects these pods by `modelArtifacts.labels`.
"""

from typing import Optional

import yaml

from backends.deploy.base import DeployTable, Deployment, EngineArgs, Placement, disaggregated_unsupported
from backends.deploy.base import engine_flags, engine_unsupported
from backends.deploy.base import gpus_per_node
from backends.deploy.pods import gpu_resource
from backends.k8s import SECRET_NAME
from backends.vllm import IMAGE
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

FILE = "values.yaml"
HELPERS = "llm-d-incubation/llm-d-modelservice charts/llm-d-modelservice/templates/_helpers.tpl (3051935)"
CHART = "llm-d-modelservice v0.4.12"
CONTAINER = ("decode", "containers", 0)


def _table(plan: Plan, gpu: GpuSpec) -> DeployTable:
    rows = (
        Placement("replicas", FILE, ("decode", "replicas"), lambda p: p.replicas, f"{CHART} values.yaml"),
        Placement("tensor_parallel", FILE, ("decode", "parallelism", "tensor"), lambda p: p.tensor_parallel,
                  HELPERS),
        Placement("data_parallel", FILE, ("decode", "parallelism", "data"), lambda p: p.data_parallel, HELPERS),
        Placement("nodes", FILE, ("decode", "parallelism", "workers"), lambda p: p.nodes, HELPERS),
        Placement("gpus_per_replica", FILE, (*CONTAINER, "resources", "limits", gpu_resource(gpu)),
                  lambda p: gpus_per_node(p), "one pod per node of a replica"),
        Placement("model_path", FILE, ("modelArtifacts", "name"), lambda p: p.model_path, HELPERS),
    )
    taken = ("--tensor-parallel-size", "--data-parallel-size", "--distributed-executor-backend")
    return DeployTable(BackendName.vllm, EngineArgs(FILE, (*CONTAINER, "args"), taken,
                                                    f"{HELPERS}: .container.args after the chart's flags"), rows)


class Llmd:
    name = "llmd"
    title = "llm-d (llm-d-modelservice Helm values)"
    engines = (BackendName.vllm,)

    def table(self, plan: Plan, gpu: GpuSpec) -> DeployTable:
        return _table(plan, gpu)

    def unsupported(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        reason = engine_unsupported(self.name, self.engines, plan, HELPERS)
        reason = reason or disaggregated_unsupported(
            self.name, plan, f"llm-d-modelservice has prefill.create beside its decode pool [source: {CHART} "
                             "examples/values-pd.yaml]")
        if reason:
            return reason
        if plan.model_path.startswith("/"):
            return (f"deploy=llmd reads the model from modelArtifacts.uri (hf://, pvc://), model_path="
                    f"{plan.model_path} is a local directory [source: {HELPERS}]")
        if plan.nodes > 1 and (plan.pipeline_parallel > 1 or plan.tensor_parallel > gpus_per_node(plan)):
            return (f"deploy=llmd spreads a multi-node replica as data-parallel ranks (multinode: true, "
                    f"parallelism.workers) and passes no --pipeline-parallel-size; this plan's tensor_parallel="
                    f"{plan.tensor_parallel} x pipeline_parallel={plan.pipeline_parallel} group spans {plan.nodes} "
                    f"nodes [source: {HELPERS}]. Fix: deploy=lws, dynamo, ray or slurm")
        return None

    def render(self, plan: Plan, name: str, gpu: GpuSpec) -> Deployment:
        table = _table(plan, gpu)
        args = list(engine_flags(plan, table.engine_args.taken).argv)
        container = {"name": "vllm", "image": IMAGE, "modelCommand": "vllmServe", "args": args,
                     "resources": {"limits": {gpu_resource(gpu): gpus_per_node(plan)},
                                   "requests": {gpu_resource(gpu): gpus_per_node(plan)}},
                     "mountModelVolume": True}
        values = {
            "multinode": plan.nodes > 1,
            "modelArtifacts": {"name": plan.model_path, "uri": f"hf://{plan.model_path}",
                               "authSecretName": SECRET_NAME,
                               "labels": {"llm-d.ai/inference-serving": "true", "llm-d.ai/model": name}},
            "routing": {"servicePort": 8000},
            "decode": {"create": True, "replicas": plan.replicas,
                       "parallelism": {"tensor": plan.tensor_parallel, "data": plan.data_parallel,
                                       "workers": plan.nodes},
                       "containers": [container]},
            "prefill": {"create": False},
        }
        notes = (f"deploy=llmd: `helm install {name} llm-d-modelservice/llm-d-modelservice -f values.yaml` "
                 f"({CHART}); for intelligent scheduling add the Gateway API Inference Extension `inferencepool` "
                 "chart selecting llm-d.ai/model=" + name + ".",)
        return Deployment(self.name, {FILE: yaml.safe_dump(values, sort_keys=False, width=1000)}, notes)


TARGET = Llmd()
