"""KServe `LLMInferenceService` (serving.kserve.io/v1alpha2): one vLLM server pool behind the llm-d router.

Read from kserve/kserve at aaac4e2 (chart kserve-llmisvc-crd v0.20.0; schema vendored in
tests/data/k8s/llminferenceservice-v1alpha2.schema.json.gz):
- config/llmisvcconfig/config-llm-template.yaml: the `main` container runs `vllm serve /mnt/models
  --served-model-name <spec.model.name> --port 8000 [--tensor-parallel-size <spec.parallelism.tensor>] ... "$@"`, so
  the container's `args` reach vLLM after the flags KServe sets itself; the model arrives from `spec.model.uri`.
- config/llmisvcconfig/config-llm-worker-data-parallel.yaml: `spec.worker` makes a replica span nodes through
  LeaderWorkerSet as data-parallel ranks (--data-parallel-size/-local from spec.parallelism.data/dataLocal); it passes
  no --pipeline-parallel-size, so a replica whose tensor/pipeline group spans nodes is not served this way.
- docs/samples/llmisvc/dp-ep/...: `router: {scheduler: {}, route: {}, gateway: {}}` asks for the managed Gateway
  route and the llm-d inference scheduler (prefix-cache and load aware endpoint picking).
"""

from typing import Optional

import yaml

from backends.deploy.base import DeployTable, Deployment, EngineArgs, Placement, disaggregated_unsupported
from backends.deploy.base import engine_flags, engine_unsupported
from backends.deploy.base import gpus_per_node
from backends.deploy.pods import gpu_resource, hf_env
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

FILE = "llminferenceservice.yaml"
TEMPLATE = "kserve/kserve config/llmisvcconfig/config-llm-template.yaml (aaac4e2)"
WORKER = "kserve/kserve config/llmisvcconfig/config-llm-worker-data-parallel.yaml (aaac4e2)"


def _table(plan: Plan, gpu: GpuSpec) -> DeployTable:
    rows = [
        Placement("replicas", FILE, ("spec", "replicas"), lambda p: p.replicas, "LLMInferenceServiceSpec.replicas"),
        Placement("tensor_parallel", FILE, ("spec", "parallelism", "tensor"), lambda p: p.tensor_parallel, TEMPLATE),
        Placement("gpus_per_replica", FILE,
                  ("spec", "template", "containers", 0, "resources", "limits", gpu_resource(gpu)),
                  lambda p: str(gpus_per_node(p)), "one pod per node of a replica"),
        Placement("model_path", FILE, ("spec", "model", "name"), lambda p: p.model_path,
                  f"{TEMPLATE}: --served-model-name"),
    ]
    taken = ("--tensor-parallel-size",)
    for r in plan.autoscaling:  # spec.scaling (CRD serving.kserve.io_llminferenceservices.yaml, aaac4e2)
        rows += [Placement("autoscaling.min_replicas", FILE, ("spec", "scaling", "minReplicas"),
                           lambda p: p.autoscaling[0].min_replicas, "LLMInferenceServiceSpec.scaling"),
                 Placement("autoscaling.max_replicas", FILE, ("spec", "scaling", "maxReplicas"),
                           lambda p: p.autoscaling[0].max_replicas, "LLMInferenceServiceSpec.scaling")]
    if plan.nodes > 1:
        rows += [Placement("data_parallel", FILE, ("spec", "parallelism", "data"), lambda p: p.data_parallel, WORKER),
                 Placement("nodes", FILE, ("spec", "parallelism", "dataLocal"), lambda p: p.data_parallel // p.nodes,
                           WORKER),
                 Placement("expert_parallel", FILE, ("spec", "parallelism", "expert"), lambda p: p.expert_parallel,
                           WORKER)]
        taken += ("--data-parallel-size", "--enable-expert-parallel", "--distributed-executor-backend")
    return DeployTable(BackendName.vllm, EngineArgs(FILE, ("spec", "template", "containers", 0, "args"), taken,
                                                    f"{TEMPLATE}: \"$@\" forwarded to vllm serve"), tuple(rows))


class KServe:
    name = "kserve"
    title = "KServe LLMInferenceService"
    engines = (BackendName.vllm,)

    def table(self, plan: Plan, gpu: GpuSpec) -> DeployTable:
        return _table(plan, gpu)

    def unsupported(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        reason = engine_unsupported(self.name, self.engines, plan, TEMPLATE)
        reason = reason or disaggregated_unsupported(
            self.name, plan, "KServe's LLMInferenceService has spec.prefill for a prefill pool [source: CRD "
                             "serving.kserve.io_llminferenceservices.yaml, aaac4e2]")
        if reason:
            return reason
        if plan.model_path.startswith("/"):
            return (f"deploy=kserve reads the model from a storage URI (spec.model.uri: hf://, pvc://, s3://), "
                    f"model_path={plan.model_path} is a local directory [source: {TEMPLATE}]")
        if plan.nodes > 1 and (plan.pipeline_parallel > 1 or plan.tensor_parallel > gpus_per_node(plan)):
            return (f"deploy=kserve spreads a multi-node replica as data-parallel ranks (spec.worker + "
                    f"parallelism.data/dataLocal) and passes no --pipeline-parallel-size; this plan's "
                    f"tensor_parallel={plan.tensor_parallel} x pipeline_parallel={plan.pipeline_parallel} group spans "
                    f"{plan.nodes} nodes [source: {WORKER}]. Fix: deploy=lws, dynamo, ray or slurm")
        return None

    def render(self, plan: Plan, name: str, gpu: GpuSpec) -> Deployment:
        table = _table(plan, gpu)
        args = list(engine_flags(plan, table.engine_args.taken).argv)
        container = {"name": "main", "args": args, "env": hf_env(),
                     "resources": {"limits": {gpu_resource(gpu): str(gpus_per_node(plan))}}}
        parallelism: dict = {"tensor": plan.tensor_parallel}
        spec: dict = {
            "model": {"uri": f"hf://{plan.model_path}", "name": plan.model_path},
            "replicas": plan.replicas,
            "parallelism": parallelism,
            "router": {"scheduler": {}, "route": {}, "gateway": {}},
            "template": {"containers": [container]},
        }
        if plan.nodes > 1:  # data-parallel ranks over the nodes of a replica (WORKER)
            parallelism.update(data=plan.data_parallel, dataLocal=plan.data_parallel // plan.nodes,
                               expert=plan.expert_parallel)
            spec["worker"] = {"containers": [dict(container)]}
        rule = next((r for r in plan.autoscaling if r.pool == "replicas"), None)
        if rule is not None:  # LLMInferenceServiceSpec.scaling: min/max replicas and KEDA triggers (the CRD)
            from backends.autoscale_k8s import trigger

            spec["scaling"] = {"minReplicas": rule.min_replicas, "maxReplicas": rule.max_replicas,
                               "keda": {"triggers": [trigger(plan, rule)]}}
        obj = {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
               "metadata": {"name": name}, "spec": spec}
        notes = ("deploy=kserve: the router block asks KServe for a managed Gateway route and the llm-d inference "
                 "scheduler; the cluster needs the Gateway API and Gateway API Inference Extension CRDs.",)
        return Deployment(self.name, {FILE: yaml.safe_dump(obj, sort_keys=False, width=1000)}, notes)


TARGET = KServe()
