"""Kubernetes objects of a disaggregated plan: a LeaderWorkerSet `DisaggregatedSet` with one role per pool (each role's
pod is the engine adapter's own pod template with the role's connector flags), and the router that finds the roles'
pods by label, with the RBAC it needs to watch them.

DisaggregatedSet (disaggregatedset.x-k8s.io/v1, kubernetes-sigs/lws config/crd/bases, 060ab4d): spec.roles[] each
{name, spec: {replicas, leaderWorkerTemplate: {size, workerTemplate}}}, as
docs/examples/disaggregatedset/basic/vllm.yaml (67b80a6) runs a vLLM prefill role (kv_producer) and a decode role (kv_consumer).
"""

import yaml

from backends.base import Artifacts
from backends.disagg import DECODE, PREFILL, ROUTER_PORT, ROUTERS, role_args, router_words
from planner.plan import Plan
from planner.specs import BackendName

DSET_FILE = "disaggregatedset.yaml"


def _dump(obj: dict) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=1000)


def role_template(plan: Plan, name: str, role: str, art: Artifacts) -> dict:
    """The adapter's pod template for `role` (from its Deployment), labelled app/role, with the connector flags; a
    vLLM NIXL pod advertises its pod IP for the NIXL handshake across machines (VLLM_NIXL_SIDE_CHANNEL_HOST)."""
    template = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]
    template["metadata"] = {"labels": {"app": name, "role": role}}
    container = template["spec"]["containers"][0]
    container["args"] = list(container.get("args") or []) + list(role_args(plan, role))
    if plan.backend is BackendName.vllm and plan.disaggregation.kv_connector == "nixl":
        container["env"].append({"name": "VLLM_NIXL_SIDE_CHANNEL_HOST",  # NIXL_DOC: set across machines
                                 "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    return template


def disaggregated_set(plan: Plan, name: str, roles: dict[str, Artifacts]) -> dict:
    """One role per pool; with plan.autoscaling each role is scaled externally (a DisaggregatedSetRoleScaler per
    role, which needs a single slice: docs/examples/disaggregatedset/autoscaling/vllm.yaml, b2292cd)."""
    pools = {PREFILL: plan.disaggregation.prefill.replicas, DECODE: plan.disaggregation.decode.replicas}
    out = {"apiVersion": "disaggregatedset.x-k8s.io/v1", "kind": "DisaggregatedSet", "metadata": {"name": name},
           "spec": {"roles": [{"name": role, "spec": {"replicas": pools[role], "leaderWorkerTemplate": {
               "size": 1, "workerTemplate": role_template(plan, name, role, roles[role])}}} for role in roles]}}
    if plan.autoscaling:
        out["spec"]["slices"] = 1
        for role in out["spec"]["roles"]:
            role["scaling"] = {"mode": "External"}
    return out


def _router_pod(plan: Plan, name: str, engine_port: int) -> dict:
    r = ROUTERS[plan.backend]
    labels = {"app": f"{name}-router"}
    words = router_words(plan, ("--prefill-selector", f"app={name}", f"role={PREFILL}"),
                         ("--decode-selector", f"app={name}", f"role={DECODE}"))
    discovery = ("--service-discovery", "--service-discovery-namespace", "$(POD_NAMESPACE)",
                 "--service-discovery-port", str(engine_port))
    line = r.install + "exec " + " ".join((*words[:len(r.program) + 1], *discovery, *words[len(r.program) + 1:]))
    container = {"name": "router", "image": r.image, "command": ["sh", "-c", line],
                 "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                 "ports": [{"name": "http", "containerPort": ROUTER_PORT}],
                 "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{name}-router", "labels": dict(labels)},
            "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"serviceAccountName": f"{name}-router", "containers": [container]}}}}


def _rbac(name: str) -> dict[str, dict]:
    """The router watches the roles' pods (and EndpointSlices) in its namespace."""
    sa = f"{name}-router"
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]
    return {
        "router-serviceaccount.yaml": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}},
        "router-role.yaml": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": sa},
                             "rules": rules},
        "router-rolebinding.yaml": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                    "metadata": {"name": sa},
                                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
                                    "subjects": [{"kind": "ServiceAccount", "name": sa}]},
    }


def manifests(plan: Plan, name: str, roles: dict[str, Artifacts]) -> dict[str, str]:
    """File name → YAML text, in a fixed order: the DisaggregatedSet, config files, the router and its Service."""
    objects: dict[str, dict] = {DSET_FILE: disaggregated_set(plan, name, roles)}
    if "configmap.yaml" in roles[DECODE].k8s:
        objects["configmap.yaml"] = yaml.safe_load(roles[DECODE].k8s["configmap.yaml"])
    objects.update(_rbac(name))
    objects["router-deployment.yaml"] = _router_pod(plan, name, roles[DECODE].port)
    objects["service.yaml"] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                               "spec": {"type": "ClusterIP", "selector": {"app": f"{name}-router"},
                                        "ports": [{"name": "http", "port": ROUTER_PORT, "targetPort": "http",
                                                   "protocol": "TCP"}]}}
    from backends import autoscale_k8s

    scalers = {role: {"apiVersion": "disaggregatedset.x-k8s.io/v1", "kind": "DisaggregatedSetRoleScaler",
                      "name": f"{name}-{role}"} for role in (PREFILL, DECODE)}
    return {**{file: _dump(obj) for file, obj in objects.items()}, **autoscale_k8s.files(plan, scalers)}

