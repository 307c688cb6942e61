"""Deploy targets (backends/deploy/): every stack renders the issue's multi-node plans or says why, every file
validates offline against the stack's vendored schema (tests/data/k8s/SOURCES.yaml), and no planned value drifts:
each row of a target's declared table reads the plan's value where the stack reads it, and every engine flag the
engine's own table renders reaches the engine."""

import dataclasses
import gzip
import json
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import compiled_or_closest, request_for

from backends.deploy import NAMES, get
from backends.deploy.base import engine_flags
from backends.deploy.ray import engine_kwargs
from planner.deploy import reason, with_deployments
from planner.errors import InputError
from planner.render import rendered
from planner.specs import BackendName

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

DATA = Path(__file__).parent / "data" / "k8s"
K8S_VERSION = "1.31"


def _load(name: str) -> dict:
    path = DATA / name
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    return json.loads(raw)


def strict(node):
    """A CRD schema that rejects unknown fields, as `kubectl apply --validate=strict` does (the API server would
    silently prune them, so a misspelt key would pass a plain check)."""
    if isinstance(node, list):
        return [strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


SCHEMAS = {
    "kserve": strict(_load("llminferenceservice-v1alpha2.schema.json.gz")),
    "dset": strict(_load("disaggregatedset-v1.schema.json.gz")),
    "llmd": _load("llmd-modelservice-values.schema.json.gz"),
    "dynamo": _load("dynamographdeployment-v1alpha1.schema.json"),
    "lws": _load("leaderworkerset-v1.schema.json"),
    "ray": _load("ray-serve-deploy.schema.json.gz"),
    "ray-llm": _load("ray-serve-llm-config.schema.json.gz"),
    "keda": strict(_load("keda-scaledobject-v1alpha1.schema.json.gz")),
}

PLANS = {
    "405b-2xh100x8": ("model=llama3.1-405b", "hw=2xh100x8"),
    "deepseek-v3-h200x8": ("model=deepseek-v3", "hw=h200x8"),
    "70b-h100x4": ("model=llama3-70b", "hw=h100x4"),
    # xPyD: long prompts at 20 req/s with a 15 ms TPOT (tests/test_disagg.py): prefill and decode pools
    "8b-h100x8-xpyd": ("model=llama3.1-8b", "hw=h100x8", "workload=summarization", "target=qps",
                       "target.min_request_rate=20", "target.tpot_ms=15", "target.request_rate_range=[4,30]"),
    # autoscaling: replicas per band over the day's range, rendered as KEDA ScaledObjects / KServe spec.scaling
    "8b-h100x8-autoscaled": ("model=llama3.1-8b", "hw=h100x8", "target=qps", "target.min_request_rate=40",
                             "target.request_rate_range=[5,60]"),
    # a disaggregated MoE plan over two nodes: TP8 + EP pools (prefill on one node, decode on the other, KV over
    # RDMA), each pool autoscaled
    "r1-2xh200x8-xpyd": ("model=deepseek-r1", "hw=2xh200x8", "plan.disaggregation=true",
                         "target.request_rate_range=[2,20]"),
}
ENGINES = {"70b-h100x4-sglang": ("70b-h100x4", BackendName.sglang),  # the same plan on another engine
           "70b-h100x4-trtllm": ("70b-h100x4", BackendName.trtllm),
           "8b-h100x8-xpyd-sglang": ("8b-h100x8-xpyd", BackendName.sglang),
           "r1-2xh200x8-xpyd-sglang": ("r1-2xh200x8-xpyd", BackendName.sglang)}


@pytest.fixture(scope="module")
def plans():
    out = {}
    for key, overrides in PLANS.items():
        req = request_for(*overrides)
        out[key] = (req, compiled_or_closest(req))
    for key, (base, backend) in ENGINES.items():
        req, compiled = out[base]
        out[key] = (req, dataclasses.replace(compiled, plan=dataclasses.replace(compiled.plan, backend=backend)))
    assert out["8b-h100x8-xpyd"][1].plan.disaggregation is not None
    assert out["r1-2xh200x8-xpyd"][1].plan.disaggregation is not None
    return out


def _container_pod(container: dict) -> None:
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                                  "template": {"spec": {"containers": [container]}}}, K8S_VERSION, strict=True)


def validate(target: str, file: str, text: str) -> None:
    """`text` against the vendored schema of its stack (pod parts as core/v1 where the stack embeds them)."""
    if file.endswith(".sbatch"):
        assert text.startswith("#!/bin/bash\n") and "#SBATCH --nodes=" in text
        return
    obj = yaml.safe_load(text)
    if target == "llmd":
        jsonschema.validate(obj, SCHEMAS["llmd"])
    elif target == "ray":
        jsonschema.validate(obj, SCHEMAS["ray"])
        for llm in obj["applications"][0]["args"]["llm_configs"]:
            jsonschema.validate(llm, SCHEMAS["ray-llm"])
    elif target == "slurm":  # the TRT-LLM options file: a mapping of LLM API options
        assert isinstance(obj, dict)
    elif obj["kind"] == "LLMInferenceService":
        jsonschema.validate(obj, SCHEMAS["kserve"])
    elif obj["kind"] == "DynamoGraphDeployment":
        jsonschema.validate(obj, SCHEMAS["dynamo"])
        for svc in obj["spec"]["services"].values():
            _container_pod({"name": "main", **svc["extraPodSpec"]["mainContainer"]})
    elif obj["kind"] == "DisaggregatedSet":
        jsonschema.validate(obj, SCHEMAS["dset"])
        for role in obj["spec"]["roles"]:
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                                          "template": role["spec"]["leaderWorkerTemplate"]["workerTemplate"]},
                                         K8S_VERSION, strict=True)
    elif obj["kind"] == "ScaledObject":
        jsonschema.validate(obj, SCHEMAS["keda"])
    elif obj["kind"] == "LeaderWorkerSet":
        jsonschema.validate(obj, SCHEMAS["lws"])
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def at(files: dict, file: str, keys: tuple):
    """The value at `keys` in a rendered file: a YAML path, or for a script the rest of the line after a prefix."""
    text = files[file]
    if file.endswith(".sbatch"):
        (prefix,) = keys
        return next(line[len(prefix):] for line in text.splitlines() if line.startswith(prefix))
    node = yaml.safe_load(text)
    for key in keys:
        node = node[key]
    return node


def _words(value) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    words = shlex.split(value)
    return shlex.split(words[0]) if len(words) == 1 and " " in words[0] else words


def _contains(words: list[str], part: list[str]) -> bool:
    return any(words[i:i + len(part)] == part for i in range(len(words) - len(part) + 1))


CASES = [pytest.param(p, t, id=f"{p}-{t}") for p in (*PLANS, *ENGINES) for t in NAMES]


@pytest.mark.parametrize("plan_key,target", CASES)
def test_renders_and_validates_or_says_why(plan_key, target, plans):
    req, compiled = plans[plan_key]
    why = reason(target, compiled, req)
    if why:
        assert f"deploy={target}" in why or "backend=" in why
        assert "source" in why
        pytest.skip(why)
    dep = get(target).render(compiled.plan, "planner-check", req.hw.gpu)
    assert dep.files
    for file, text in dep.files.items():
        validate(target, file, text)


@pytest.mark.parametrize("plan_key,target", CASES)
def test_no_planned_value_drifts(plan_key, target, plans):
    """Every declared placement holds the plan's value; every engine flag the plan yields reaches the engine."""
    req, compiled = plans[plan_key]
    if reason(target, compiled, req):
        pytest.skip("not served by this stack")
    plan, gpu = compiled.plan, req.hw.gpu
    files = get(target).render(plan, "planner-check", gpu).files
    table = get(target).table(plan, gpu)
    for row in table.placements:
        got = at(files, row.file, row.keys)
        want = row.value(plan)
        if isinstance(got, str) and " " in got:
            assert _contains(_words(got), shlex.split(str(want))), (row.field, got, want)
        else:
            assert str(got) == str(want), (row.field, row.keys, got, want)
    engine = at(files, table.engine_args.file, table.engine_args.keys)
    if table.engine_args.kwargs:
        assert engine == engine_kwargs(plan)
        return
    words = _words(engine)
    flags = engine_flags(plan, table.engine_args.taken).argv
    i = 0
    while i < len(flags):  # each flag with its value (when it has one) as neighbours
        pair = flags[i:i + 2] if i + 1 < len(flags) and not flags[i + 1].startswith("--") else flags[i:i + 1]
        assert _contains(words, list(pair)), (target, pair, words)
        i += len(pair)


def test_405b_on_two_nodes_renders_for_the_stacks_that_span_nodes(plans):
    req, compiled = plans["405b-2xh100x8"]
    assert compiled.plan.nodes == 2 and compiled.plan.pipeline_parallel == 2
    reasons = {t: reason(t, compiled, req) for t in NAMES}
    assert {t for t, r in reasons.items() if r is None} == {"dynamo", "lws", "ray", "slurm"}
    for t in ("kserve", "llmd"):
        assert "--pipeline-parallel-size" in reasons[t] and "Fix: deploy=lws" in reasons[t]
    dgd = yaml.safe_load(get("dynamo").render(compiled.plan, "x", req.hw.gpu).files["dynamographdeployment.yaml"])
    worker = dgd["spec"]["services"]["VllmWorker"]
    assert worker["multinode"] == {"nodeCount": 2} and worker["resources"]["limits"]["gpu"] == "8"
    script = get("slurm").render(compiled.plan, "x", req.hw.gpu).files["serve.sbatch"]
    assert "ray start --head" in script and "--distributed-executor-backend ray" in script


def test_deploy_all_adds_files_and_notes_and_one_target_refuses_with_the_reason(plans):
    req, compiled = plans["405b-2xh100x8"]
    compiled = rendered(compiled, req)
    every = with_deployments(compiled, req, "all")
    assert {f.split("/")[1] for f in every.launch.files if f.startswith("deploy/")} == {"dynamo", "lws", "ray",
                                                                                        "slurm"}
    assert any(n.startswith("deploy=kserve: not rendered:") for n in every.notes)
    with pytest.raises(InputError, match="deploy=kserve: cannot render this plan: .*pipeline"):
        with_deployments(compiled, req, "kserve")


def test_an_engine_a_stack_does_not_run_is_refused_with_the_fix(plans):
    req, compiled = plans["70b-h100x4"]
    tgi = dataclasses.replace(compiled, plan=dataclasses.replace(compiled.plan, backend=BackendName.tgi))
    why = reason("kserve", tgi, req)
    assert "runs vllm workers here, the plan's backend is tgi" in why and "Fix: pin backend=vllm" in why


@pytest.mark.parametrize("schema,bad,match", [
    pytest.param("kserve", {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
                            "spec": {"parallelism": {"tensr": 8}}}, "Additional properties", id="kserve-typo"),
    pytest.param("dynamo", {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {},
                            "spec": {"services": {"W": {"multinode": {"nodeCount": 1}}}}}, "less than the minimum",
                 id="dynamo-one-node-multinode"),
    pytest.param("llmd", {"decode": {"parallelism": {"tensr": 8}}}, "Additional properties", id="llmd-typo"),
    pytest.param("ray-llm", {"model_loading_config": {"model_id": "m"}, "engine_kwarg": {}}, "Additional properties",
                 id="ray-llm-typo"),
])
def test_vendored_schemas_reject_what_the_stacks_reject(schema, bad, match):
    with pytest.raises(jsonschema.ValidationError, match=match):
        jsonschema.validate(bad, SCHEMAS[schema])


def test_cli_renders_every_stack_that_can_and_refuses_one_that_cannot(tmp_path):
    from conftest import run_cli

    ok = run_cli("model=llama3.1-405b", "hw=2xh100x8", "action=render", "deploy=all", f"out={tmp_path}/p.yaml")
    assert ok.returncode == 0, ok.stderr
    written = {p.parent.name for p in (tmp_path / "p" / "deploy").glob("*/*")}
    assert written == {"dynamo", "lws", "ray", "slurm"}
    assert "deploy=kserve: not rendered:" in ok.stderr
    refused = run_cli("model=llama3.1-405b", "hw=2xh100x8", "action=render", "deploy=llmd", f"out={tmp_path}/q.yaml")
    assert refused.returncode == 2 and "deploy=llmd: cannot render this plan" in refused.stderr


def test_trtllm_405b_on_two_nodes_plans_and_renders_for_slurm_and_lws(tmp_path):
    """backend=trtllm plans the two-node 405B layout (the capability matrix serves multi-node through MPI) and renders
    for Slurm (srun --mpi=pmix, trtllm-llmapi-launch) and LeaderWorkerSet; each file validates."""
    from conftest import run_cli

    out = tmp_path / "p.yaml"
    ok = run_cli("model=llama3.1-405b", "hw=2xh100x8", "backend=trtllm", "action=render", "deploy=all", f"out={out}")
    assert ok.returncode == 0, ok.stderr
    plan = yaml.safe_load(out.read_text())["plan"]
    assert (plan["backend"], plan["nodes"], plan["tensor_parallel"] * plan["pipeline_parallel"]) == ("trtllm", 2, 16)
    written = {p.parent.name: p for p in (tmp_path / "p" / "deploy").glob("*/*")}
    assert set(written) == {"lws", "slurm"}
    for path in (tmp_path / "p" / "deploy").glob("*/*"):
        validate(path.parent.name, path.name, path.read_text())
    script = (tmp_path / "p" / "deploy" / "slurm" / "serve.sbatch").read_text()
    assert "srun --mpi=pmix --ntasks=16 --ntasks-per-node=8" in script and "trtllm-llmapi-launch" in script


def test_a_disaggregated_plan_renders_a_disaggregated_set_and_dynamo_workers_per_pool(plans):
    """deploy=lws: one DisaggregatedSet role per pool (prefill kv_producer, decode kv_consumer) and the router that
    finds them by label; deploy=dynamo: a prefill worker (--is-prefill-worker) and a decode worker; the stacks that
    do not render pools here say so."""
    req, compiled = plans["8b-h100x8-xpyd"]
    d = compiled.plan.disaggregation
    files = get("lws").render(compiled.plan, "x", req.hw.gpu).files
    dset = yaml.safe_load(files["disaggregatedset.yaml"])
    roles = {r["name"]: r["spec"] for r in dset["spec"]["roles"]}
    assert (roles["prefill"]["replicas"], roles["decode"]["replicas"]) == (d.prefill.replicas, d.decode.replicas)
    args = {name: r["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["args"]
            for name, r in roles.items()}
    assert '"kv_role":"kv_producer"' in args["prefill"][-1] and '"kv_role":"kv_consumer"' in args["decode"][-1]
    router = yaml.safe_load(files["router-deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
    assert "--prefill-selector app=x role=prefill --decode-selector app=x role=decode" in router["command"][2]
    dgd = yaml.safe_load(get("dynamo").render(compiled.plan, "x", req.hw.gpu).files["dynamographdeployment.yaml"])
    services = dgd["spec"]["services"]
    assert services["VllmPrefillWorker"]["replicas"] == d.prefill.replicas
    assert "--is-prefill-worker" in services["VllmPrefillWorker"]["extraPodSpec"]["mainContainer"]["args"][0]
    assert "--is-prefill-worker" not in services["VllmDecodeWorker"]["extraPodSpec"]["mainContainer"]["args"][0]
    for target in ("kserve", "llmd", "ray", "slurm"):
        assert "renders for deploy=lws (DisaggregatedSet) and deploy=dynamo only" in reason(target, compiled, req)


@pytest.mark.parametrize("backend,ep", [(BackendName.vllm, ["--enable-expert-parallel"]),
                                        (BackendName.sglang, ["--ep-size", "8"])])
def test_a_disaggregated_moe_plan_keeps_expert_parallel_in_every_pool_of_every_stack(plans, backend, ep):
    """DeepSeek-R1 split over two H200 nodes: both roles of the DisaggregatedSet and both Dynamo workers run the
    pool's TP8 + expert-parallel layout with their KV role, one ScaledObject per pool validates against KEDA's CRD,
    and the stacks that render no pools say why."""
    req, compiled = plans["r1-2xh200x8-xpyd" if backend is BackendName.vllm else "r1-2xh200x8-xpyd-sglang"]
    plan = compiled.plan
    d = plan.disaggregation
    assert d.prefill.expert_parallel and d.decode.expert_parallel and d.kv_link == "rdma"
    assert {r.pool for r in plan.autoscaling} == {"prefill", "decode"}
    files = get("lws").render(plan, "x", req.hw.gpu).files
    roles = {r["name"]: r["spec"] for r in yaml.safe_load(files["disaggregatedset.yaml"])["spec"]["roles"]}
    for name, pool in (("prefill", d.prefill), ("decode", d.decode)):
        args = roles[name]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["args"]
        assert _contains(args, ep) and str(pool.tensor_parallel) in args, (name, args)
    dyn = get("dynamo").render(plan, "x", req.hw.gpu).files
    workers = {n: s for n, s in yaml.safe_load(dyn["dynamographdeployment.yaml"])["spec"]["services"].items()
               if n.endswith("Worker")}
    assert len(workers) == 2
    for svc in workers.values():
        assert _contains(_words(svc["extraPodSpec"]["mainContainer"]["args"][0]), ep)
    for target, fs in (("lws", files), ("dynamo", dyn)):
        scaled = sorted(f for f in fs if f.startswith("scaledobject-"))
        assert scaled == ["scaledobject-decode.yaml", "scaledobject-prefill.yaml"], (target, list(fs))
        for f in scaled:
            validate(target, f, fs[f])
    for target in ("kserve", "llmd", "ray", "slurm"):
        assert reason(target, compiled, req)
