"""plan.autoscaling as Kubernetes objects: a KEDA ScaledObject (keda.sh/v1alpha1) per scaled pool, its prometheus
trigger the engine's finished-request rate and its threshold what one replica sustains within the SLOs, so KEDA asks
for ceil(rate / threshold) replicas between the range's ends (planner/autoscale.py's bands).

Read in kedacore/keda at 8b4f083 (v2.20.1+): config/crd/bases/keda.sh_scaledobjects.yaml (spec.scaleTargetRef
{apiVersion, kind, name}, minReplicaCount, maxReplicaCount, triggers[{type, metadata}]; vendored in tests/data/k8s)
and pkg/scalers/prometheus_scaler.go (metadata serverAddress, query, threshold; the trigger's default metricType
AverageValue: desired replicas = ceil(metric / threshold)). Any object with a /scale subresource is a target:
apps/v1 Deployment, LeaderWorkerSet, LWS's DisaggregatedSetRoleScaler `<set>-<role>` (docs/examples/disaggregatedset/
autoscaling/vllm.yaml, b2292cd), Dynamo's DynamoGraphDeploymentScalingAdapter `<graph>-<service lower case>`
(deploy/cloud/operator/api/v1alpha1/dynamographdeploymentscalingadapter_types.go, 6746518).
"""

from typing import Optional

import yaml

from planner.plan import Plan, ScaleRule

PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"  # the Prometheus Operator's Service: set yours
WINDOW = "2m"  # the rate() window of the trigger's query
KEDA = "kedacore/keda config/crd/bases/keda.sh_scaledobjects.yaml (8b4f083)"


def requests_metric(plan: Plan) -> Optional[str]:
    """The engine's finished-requests counter (backends' Metrics.requests_total), or None."""
    from backends import get

    return get(plan.backend).metrics.requests_total


def trigger(plan: Plan, rule: ScaleRule) -> dict:
    """KEDA's prometheus trigger: the served model's finished-request rate against one replica's capacity."""
    metric = requests_metric(plan)
    query = f'sum(rate({metric}{{model_name="{plan.served_model_name}"}}[{WINDOW}]))'
    return {"type": "prometheus", "metadata": {"serverAddress": PROMETHEUS, "query": query,
                                               "threshold": f"{rule.replica_rps:.3f}"}}


def scaled_object(plan: Plan, rule: ScaleRule, name: str, target: dict) -> dict:
    """One ScaledObject named `name` scaling `target` ({apiVersion, kind, name}) by `rule`."""
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": target, "minReplicaCount": rule.min_replicas,
                     "maxReplicaCount": rule.max_replicas, "triggers": [trigger(plan, rule)]}}


def files(plan: Plan, targets: dict[str, dict]) -> dict[str, str]:
    """`scaledobject[-<pool>].yaml` → YAML per rule of plan.autoscaling whose pool has a target in `targets`
    (pool → {apiVersion, kind, name}); nothing when the engine exposes no request counter."""
    if not plan.autoscaling or requests_metric(plan) is None:
        return {}
    out = {}
    for rule in plan.autoscaling:
        if rule.pool not in targets:
            continue
        t = targets[rule.pool]
        file = "scaledobject.yaml" if rule.pool == "replicas" else f"scaledobject-{rule.pool}.yaml"
        out[file] = yaml.safe_dump(scaled_object(plan, rule, t["name"], t), sort_keys=False, width=1000)
    return out


def note(plan: Plan) -> Optional[str]:
    if not plan.autoscaling:
        return None
    if requests_metric(plan) is None:
        return (f"autoscaling: backend={plan.backend.value} exposes no finished-request counter here, so no KEDA "
                "ScaledObject is rendered; scale by plan.autoscaling's bands with your own metric.")
    return (f"autoscaling: KEDA ScaledObject(s) query Prometheus at {PROMETHEUS} (set serverAddress to yours) for "
            f"{requests_metric(plan)}; KEDA must be installed ({KEDA}).")
