"""Render a disaggregated plan (plan.disaggregation): each pool's servers as the engine adapter renders them from the
pool's own plan (role_plan), plus the role's KV-connector flags declared per engine (ROLE_FLAGS), and the router in
front that sends each request to a prefill and then a decode instance (ROUTERS).

Kubernetes: one LeaderWorkerSet `DisaggregatedSet` (disaggregatedset.x-k8s.io/v1) with a role per pool, and the
router's Deployment, which finds the two roles' pods by label (Kubernetes service discovery, so each pool scales on
its own). docker and the local argv files take the instances' URLs from the caller.
"""

import json
import shlex
from dataclasses import dataclass, replace
from typing import Callable, Optional

import yaml

from backends.base import Artifacts
from planner.kvtransfer import Connector, connector
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

PREFILL, DECODE = "prefill", "decode"
ROLES = (PREFILL, DECODE)
ROUTER_PORT = 8000
DSET = "kubernetes-sigs/lws docs/examples/disaggregatedset/basic/vllm.yaml (67b80a6)"
NIXL_DOC = "vllm-project/vllm docs/features/nixl_connector_usage.md (026c83f)"


@dataclass(frozen=True)
class RoleFlag:
    """One engine flag a role's servers get besides the engine's own table: its value for (role, connector)."""

    name: str
    value: Callable[[str, Connector], str]
    source: str


def _kv_transfer_config(role: str, conn: Connector) -> str:
    return json.dumps({"kv_connector": conn.vllm, "kv_role": "kv_producer" if role == PREFILL else "kv_consumer"},
                      separators=(",", ":"))


ROLE_FLAGS: dict[BackendName, tuple[RoleFlag, ...]] = {
    BackendName.vllm: (RoleFlag("--kv-transfer-config", _kv_transfer_config,
                                "vllm 0.32 config/kv_transfer.py KVTransferConfig (kv_connector, kv_role: "
                                f"kv_producer | kv_consumer | kv_both); {NIXL_DOC} (multi-instance: kv_producer / "
                                "kv_consumer)"),),
    BackendName.sglang: (
        RoleFlag("--disaggregation-mode", lambda role, conn: role,
                 "sglang 0.5.20 srt/arg_groups/fields/disagg.py disaggregation_mode (null | prefill | decode)"),
        RoleFlag("--disaggregation-transfer-backend", lambda role, conn: conn.sglang,
                 "sglang 0.5.20 srt/arg_groups/fields/disagg.py; choices.py DISAGG_TRANSFER_BACKEND_CHOICES"),
    ),
}


@dataclass(frozen=True)
class Router:
    """The engine's prefill/decode-aware router: its image, the command that starts it (static URLs or Kubernetes
    service discovery by pod labels) and where the flags were read."""

    image: str
    program: tuple[str, ...]
    pd_flag: str
    connector_flag: Optional[str]  # the router's own connector switch (vllm-router --kv-connector), or None
    install: str  # shell run before the router in its container ("" when the image has it)
    source: str


ROUTERS: dict[BackendName, Router] = {
    BackendName.vllm: Router(
        image="vllm/vllm-openai:v0.32.0", program=("vllm-router",), pd_flag="--vllm-pd-disaggregation",
        connector_flag="--kv-connector", install="pip install vllm-router==0.1.9 && ",
        source="vllm-project/router src/main.rs (03e9af5): --vllm-pd-disaggregation, --prefill/--decode URLs or "
               "--service-discovery with --prefill-selector/--decode-selector, --kv-connector nixl|mooncake; PyPI "
               "vllm-router 0.1.9"),
    BackendName.sglang: Router(
        image="lmsysorg/sglang:v0.5.20", program=("python3", "-m", "sglang_router.launch_router"),
        pd_flag="--pd-disaggregation", connector_flag=None, install="",
        source="sgl-project/sglang docs/advanced_features/pd_disaggregation.md (08edc50) and its router docs: "
               "--pd-disaggregation --prefill URL --decode URL; --service-discovery --prefill-selector "
               "--decode-selector"),
}


def role_plan(plan: Plan, role: str) -> Plan:
    """The plan of one role's servers: the pool's layout and limits, no disaggregation (the engine's table renders an
    ordinary server; ROLE_FLAGS add the connector). Prefill servers sample one token, so they draft none."""
    d = plan.disaggregation
    if role == DECODE:
        return replace(plan, disaggregation=None)
    p = d.prefill
    return replace(plan, disaggregation=None, replicas=p.replicas, tensor_parallel=p.tensor_parallel,
                   expert_parallel=p.expert_parallel, gpus_per_replica=p.gpus_per_replica, nodes=1,
                   max_num_batched_tokens=p.max_num_batched_tokens, speculative=None)


def role_args(plan: Plan, role: str) -> tuple[str, ...]:
    """The connector flags of a role's servers (ROLE_FLAGS of the plan's engine)."""
    conn = connector(plan.disaggregation.kv_connector)
    return tuple(w for f in ROLE_FLAGS[plan.backend] for w in (f.name, f.value(role, conn)))


def router_words(plan: Plan, prefill: tuple[str, ...], decode: tuple[str, ...]) -> tuple[str, ...]:
    """The router command with its instance arguments (static URLs or the service-discovery selectors)."""
    r = ROUTERS[plan.backend]
    conn = connector(plan.disaggregation.kv_connector)
    own = (r.connector_flag, conn.name) if r.connector_flag else ()
    return (*r.program, r.pd_flag, *prefill, *decode, *own, "--host", "0.0.0.0", "--port", str(ROUTER_PORT))


def render(plan: Plan, name: str, api_key_env: Optional[str], gpu: Optional[GpuSpec]) -> Artifacts:
    """The artifacts of a disaggregated plan: argv is the decode server's, pd/*.argv.txt hold each role's and the
    router's command, docker.sh runs one role per call, k8s holds the DisaggregatedSet and the router."""
    from backends import get
    from backends.pd_k8s import manifests

    roles = {role: get(plan.backend).render(role_plan(plan, role), f"{name}-{role}", api_key_env, gpu)
             for role in ROLES}
    argv = {role: roles[role].argv + role_args(plan, role) for role in ROLES}
    local = router_words(plan, ("--prefill", "$PREFILL_URL"), ("--decode", "$DECODE_URL"))
    files = {**roles[DECODE].files, **{f"pd/{role}.argv.txt": shlex.join(argv[role]) + "\n" for role in ROLES},
             "pd/router.argv.txt": " ".join(local) + "\n"}
    docker = "\n".join(
        [f"# xPyD: {plan.disaggregation.summary()}. Run each role on its GPUs; the router needs both URLs:",
         "#   GPUS=0 PORT=8100 ./docker.sh prefill | GPUS=1 PORT=8200 ./docker.sh decode | "
         "PREFILL_URL=http://<prefill>:<port> DECODE_URL=http://<decode>:<port> ./docker.sh router",
         'case "${1:?prefill, decode or router}" in']
        + [f"  {role}) {_docker_role(roles[role], role_args(plan, role))} ;;" for role in ROLES]
        + [f"  router) docker run --rm --network=host -e PREFILL_URL -e DECODE_URL {ROUTERS[plan.backend].image} "
           f"sh -c {shlex.quote(ROUTERS[plan.backend].install + ' '.join(local))} ;;", "esac"])
    return replace(roles[DECODE], argv=argv[DECODE], docker=docker, files=files,
                   k8s=manifests(plan, name, {role: roles[role] for role in ROLES}),
                   warnings=roles[DECODE].warnings + (note(plan),))


def _docker_role(art: Artifacts, extra: tuple[str, ...]) -> str:
    """The adapter's `docker run` line for one instance of a role, with the role's connector flags: on the host
    network (the KV connector's side channel reaches the peer instances), on the GPUs in $GPUS, serving on $PORT
    (several instances share a node). VLLM_NIXL_SIDE_CHANNEL_PORT/HOST pass through: each instance on a host needs its
    own side-channel port (NIXL_DOC)."""
    port = str(art.port)
    # docker's --gpus takes a CSV, so a list of ids is quoted inside the value: --gpus '"device=0,1"' (docker docs)
    line = art.docker.replace("--gpus all", '--gpus "\\"device=${GPUS:?the GPU ids of this instance, e.g. 0,1}\\"" '
                              "--network=host -e VLLM_NIXL_SIDE_CHANNEL_PORT -e VLLM_NIXL_SIDE_CHANNEL_HOST")
    line = line.replace(f" -p {port}:{port}", "").replace(f" --port {port}", ' --port "${PORT:-' + port + '}"')
    return line + " " + shlex.join(extra)


def note(plan: Plan) -> str:
    r = ROUTERS[plan.backend]
    return (f"xPyD ({plan.disaggregation.summary()}): clients talk to the router on port {ROUTER_PORT} "
            f"({' '.join(r.program)}; {r.source}). Not run here: no router or KV connector was exercised on this "
            "machine" + ("; the vLLM router is installed from PyPI at container start (no official image checked)"
                         if r.install else "") + ".")

