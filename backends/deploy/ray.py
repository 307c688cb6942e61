"""Ray Serve LLM: a Serve config (`serve deploy serve_config.yaml`, or a KubeRay RayService's serveConfigV2) whose one
application runs `ray.serve.llm:build_openai_app` with one `LLMConfig` for the plan.

Read in ray 2.60.0 (PyPI), whose pydantic models give the vendored schemas (tests/data/k8s/ray-serve-deploy.schema
.json.gz: ray.serve.schema.ServeDeploySchema; ray-serve-llm-config.schema.json.gz: ray.llm._internal.serve.core
.configs.llm_config.LLMConfig, extra="forbid"):
- ray/serve/llm/__init__.py build_openai_app: the YAML form `applications: [{import_path:
  ray.serve.llm:build_openai_app, args: {llm_configs: [...]}}]`.
- LLMConfig: model_loading_config {model_id (what clients send), model_source (HF id)}, accelerator_type (Ray's
  names: ray/util/accelerators/accelerators.py), engine_kwargs (vLLM's EngineArgs fields: the plan's engine flags as
  keyword arguments), deployment_config (Serve options: num_replicas), placement_group_config (default: one bundle
  per worker, tp x pp bundles, which Ray places over the nodes of the cluster).
"""

import json
from typing import Optional

import yaml

from backends.deploy.base import DeployTable, Deployment, EngineArgs, Placement, disaggregated_unsupported
from backends.deploy.base import engine_flags, engine_unsupported
from backends.table import Where
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

FILE = "serve_config.yaml"
LLM = ("applications", 0, "args", "llm_configs", 0)
SOURCE = "ray 2.60.0 ray/llm/_internal/serve/core/configs/llm_config.py LLMConfig"
# our GPU name → Ray's accelerator_type (ray 2.60.0 ray/util/accelerators/accelerators.py)
ACCELERATOR = {"v100": "V100", "t4": "T4", "a10g": "A10G", "l4": "L4", "l40s": "L40S", "a100-40g": "A100-40G",
               "a100-80g": "A100-80G", "h100-sxm": "H100", "h100-pcie": "H100", "h200": "H200", "b200": "B200",
               "mi300x": "AMD-Instinct-MI300X-OAM"}


def engine_kwargs(plan: Plan) -> dict:
    """The plan's vLLM flags as EngineArgs keyword arguments: `--max-num-seqs 256` → max_num_seqs=256, a switch →
    True/False (`--no-x` → x=False), JSON flags (--speculative-config) → their mapping. Typed by the flag table's
    rows: numbers as numbers, so Serve's pydantic sees the types EngineArgs declares."""
    from backends import get

    kwargs: dict = {}
    for row in get(plan.backend).table.flags:
        value = row.value(plan)
        if row.where is not Where.argv or value is None or row.name == "--distributed-executor-backend":
            continue
        key = row.name[2:].replace("-", "_")
        kwargs[key] = _typed(value)
    return kwargs


def _typed(value):
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    for parse in (int, float, json.loads):
        try:
            return parse(value)
        except ValueError:
            continue
    return value


def _table(plan: Plan, gpu: GpuSpec) -> DeployTable:
    rows = (Placement("replicas", FILE, (*LLM, "deployment_config", "num_replicas"), lambda p: p.replicas, SOURCE),
            Placement("model_path", FILE, (*LLM, "model_loading_config", "model_source"), lambda p: p.model_path,
                      SOURCE))
    return DeployTable(BackendName.vllm, EngineArgs(FILE, (*LLM, "engine_kwargs"), ("--distributed-executor-backend",),
                                                    f"{SOURCE}: engine_kwargs", kwargs=True), rows)


class RayServe:
    name = "ray"
    title = "Ray Serve LLM"
    engines = (BackendName.vllm,)

    def table(self, plan: Plan, gpu: GpuSpec) -> DeployTable:
        return _table(plan, gpu)

    def unsupported(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        reason = engine_unsupported(self.name, self.engines, plan, SOURCE)
        reason = reason or disaggregated_unsupported(
            self.name, plan, f"Ray Serve LLM has a prefill/decode builder of its own, not rendered here [source: "
                             f"{SOURCE}]")
        if reason:
            return reason
        if gpu.name not in ACCELERATOR:
            return (f"deploy=ray: Ray has no accelerator_type for {gpu.name} (it knows "
                    f"{', '.join(sorted(ACCELERATOR))}) [source: ray 2.60.0 ray/util/accelerators/accelerators.py]")
        return None

    def render(self, plan: Plan, name: str, gpu: GpuSpec) -> Deployment:
        llm = {"model_loading_config": {"model_id": plan.served_model_name, "model_source": plan.model_path},
               "accelerator_type": ACCELERATOR[gpu.name],
               "engine_kwargs": engine_kwargs(plan),
               "deployment_config": {"num_replicas": plan.replicas}}
        config = {"applications": [{"name": name, "route_prefix": "/", "import_path": "ray.serve.llm:build_openai_app",
                                    "args": {"llm_configs": [llm]}}]}
        nodes = f"{plan.nodes} nodes of {plan.gpus_per_replica // plan.nodes} GPUs" if plan.nodes > 1 else "one node"
        notes = (f"deploy=ray: `serve deploy serve_config.yaml` on a Ray cluster (or KubeRay RayService "
                 f"serveConfigV2) with {plan.replicas} x {nodes} of {ACCELERATOR[gpu.name]} GPUs per replica; "
                 "Ray places the tensor x pipeline workers as one placement group.",)
        return Deployment(self.name, {FILE: yaml.safe_dump(config, sort_keys=False, width=1000)}, notes)


TARGET = RayServe()
