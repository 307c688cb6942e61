"""LeaderWorkerSet (leaderworkerset.x-k8s.io/v1): the engine adapters' own Kubernetes manifests (backends/k8s.py).

A replica that spans nodes is one LeaderWorkerSet group (size = nodes; the leader serves, workers join it); a replica
on one node is a Deployment, since a group of size 1 adds nothing. Every engine renders here.
"""

from typing import Optional

from backends.deploy.base import DeployTable, Deployment, EngineArgs, Placement, gpus_per_node
from backends.deploy.pods import gpu_resource
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

LWS_FILE = "leaderworkerset.yaml"
DEPLOY_FILE = "deployment.yaml"
TYPES = "kubernetes-sigs/lws api/leaderworkerset/v1/leaderworkerset_types.go (060ab4d)"
LEADER = ("spec", "leaderWorkerTemplate", "leaderTemplate", "spec", "containers", 0)


def _table(plan: Plan, gpu: GpuSpec) -> DeployTable:
    if plan.nodes > 1:
        rows = (Placement("replicas", LWS_FILE, ("spec", "replicas"), lambda p: p.replicas, TYPES),
                Placement("nodes", LWS_FILE, ("spec", "leaderWorkerTemplate", "size"), lambda p: p.nodes, TYPES),
                Placement("gpus_per_replica", LWS_FILE, (*LEADER, "resources", "limits", gpu_resource(gpu)),
                          lambda p: gpus_per_node(p), "one pod per node of a replica"))
        args = EngineArgs(LWS_FILE, (*LEADER, "command", 2), (), "backends/<engine>.py MultiNode leader line")
    else:
        container = ("spec", "template", "spec", "containers", 0)
        rows = (Placement("replicas", DEPLOY_FILE, ("spec", "replicas"), lambda p: p.replicas, "apps/v1 Deployment"),
                Placement("gpus_per_replica", DEPLOY_FILE, (*container, "resources", "limits", gpu_resource(gpu)),
                          lambda p: gpus_per_node(p), "one pod per replica"))
        args = EngineArgs(DEPLOY_FILE, (*container, "args"), (), "the engine's container args")
    return DeployTable(plan.backend, args, rows)


class Lws:
    name = "lws"
    title = "LeaderWorkerSet"
    engines = (BackendName.vllm, BackendName.sglang, BackendName.trtllm, BackendName.tgi)

    def table(self, plan: Plan, gpu: GpuSpec) -> DeployTable:
        return _table(plan, gpu)

    def unsupported(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        return None  # the engine's own unsupported() has screened the plan

    def render(self, plan: Plan, name: str, gpu: GpuSpec) -> Deployment:
        from backends import get

        art = get(plan.backend).render(plan, name, gpu=gpu)
        return Deployment(self.name, dict(art.k8s), ())


TARGET = Lws()

