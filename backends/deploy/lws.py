"""LeaderWorkerSet (leaderworkerset.x-k8s.io/v1): the engine adapters' own Kubernetes manifests (backends/k8s.py).

A replica that spans nodes is one LeaderWorkerSet group (size = nodes; the leader serves, workers join it); a replica
on one node is a Deployment, since a group of size 1 adds nothing. Every engine renders here. A disaggregated plan is
LWS's DisaggregatedSet (disaggregatedset.x-k8s.io/v1): a role per pool, plus the router (backends/pd_k8s.py).
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


DSET_FILE = "disaggregatedset.yaml"
DSET_TYPES = "kubernetes-sigs/lws api/disaggregatedset/v1 (060ab4d): spec.roles[].spec.replicas, leaderWorkerTemplate"


def _roles_table(plan: Plan, gpu: GpuSpec) -> DeployTable:
    """A disaggregated plan: one DisaggregatedSet role per pool (prefill first), one pod per instance."""
    role = ("spec", "roles")
    pod = ("leaderWorkerTemplate", "workerTemplate", "spec", "containers", 0)
    rows = (Placement("disaggregation.prefill.replicas", DSET_FILE, (*role, 0, "spec", "replicas"),
                      lambda p: p.disaggregation.prefill.replicas, DSET_TYPES),
            Placement("disaggregation.decode.replicas", DSET_FILE, (*role, 1, "spec", "replicas"),
                      lambda p: p.disaggregation.decode.replicas, DSET_TYPES),
            Placement("disaggregation.prefill.gpus_per_replica", DSET_FILE,
                      (*role, 0, "spec", *pod, "resources", "limits", gpu_resource(gpu)),
                      lambda p: p.disaggregation.prefill.gpus_per_replica, "one pod per prefill instance"),
            Placement("gpus_per_replica", DSET_FILE, (*role, 1, "spec", *pod, "resources", "limits", gpu_resource(gpu)),
                      lambda p: p.gpus_per_replica, "one pod per decode instance"))
    args = EngineArgs(DSET_FILE, (*role, 1, "spec", *pod, "args"), (), "the decode role's container args")
    return DeployTable(plan.backend, args, rows)


def _table(plan: Plan, gpu: GpuSpec) -> DeployTable:
    if plan.disaggregation is not None:
        return _roles_table(plan, gpu)
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

        if plan.disaggregation is not None:  # the DisaggregatedSet and the router (backends/pd_k8s.py)
            from backends import disagg

            art = disagg.render(plan, name, None, gpu)
        else:
            art = get(plan.backend).render(plan, name, gpu=gpu)
        return Deployment(self.name, dict(art.k8s), ())


TARGET = Lws()

