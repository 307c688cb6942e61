"""Rendered Kubernetes manifests validate offline: core objects against the Kubernetes OpenAPI schemas that the
kubernetes-validate package ships, the LeaderWorkerSet against our own JSON schema of the LWS v1 API
(tests/data/k8s/leaderworkerset-v1.schema.json) with its pod templates checked as core/v1 PodTemplateSpec."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import compiled_or_closest, request_for

from backends import ADAPTERS, get, unsupported
from planner.render import rendered, write
from planner.specs import BackendName

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

K8S_VERSION = "1.31"
LWS_SCHEMA = json.loads((Path(__file__).parent / "data" / "k8s" / "leaderworkerset-v1.schema.json").read_text())


def validate_core(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def validate_pod_template(template: dict) -> None:
    validate_core({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template})


@pytest.fixture(scope="module")
def plans():
    one = request_for("model=llama3-70b", "hw=h100x4")
    two = request_for("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16")
    return {"one-node": (one, compiled_or_closest(one)), "two-nodes": (two, compiled_or_closest(two))}


def _rendered(backend, shape, plans):
    """The artifacts of the `shape` plan served by `backend`; skipped where the backend does not serve it."""
    req, compiled = plans[shape]
    plan = dataclasses.replace(compiled.plan, backend=backend)
    if unsupported(backend, plan, req.hw.gpu):
        pytest.skip(f"{backend.value} does not serve the {shape} plan (see test_backends unsupported cases)")
    return get(backend).render(plan, "planner-check")


@pytest.mark.parametrize("backend", [pytest.param(b, id=b.value) for b in ADAPTERS])
@pytest.mark.parametrize("shape", ["one-node", "two-nodes"])
def test_manifests_validate(backend, shape, plans):
    art = _rendered(backend, shape, plans)
    for name, text in art.k8s.items():
        obj = yaml.safe_load(text)
        if obj["kind"] == "LeaderWorkerSet":
            jsonschema.validate(obj, LWS_SCHEMA)
            tmpl = obj["spec"]["leaderWorkerTemplate"]
            validate_pod_template(tmpl["leaderTemplate"])
            validate_pod_template(tmpl["workerTemplate"])
        else:
            validate_core(obj)


def test_two_node_vllm_plan_is_a_leaderworkerset_with_a_ray_cluster(plans):
    req, compiled = plans["two-nodes"]
    plan = compiled.plan
    assert (plan.tensor_parallel, plan.pipeline_parallel, plan.nodes) == (8, 2, 2)
    art = get(BackendName.vllm).render(plan, "llama3-1-405b-vllm")
    assert "deployment.yaml" not in art.k8s
    lws = yaml.safe_load(art.k8s["leaderworkerset.yaml"])
    jsonschema.validate(lws, LWS_SCHEMA)
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == plan.nodes
    assert lws["spec"]["replicas"] == plan.replicas
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    worker = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
    assert leader["command"][-1].startswith("ray start --head")
    assert "--distributed-executor-backend ray" in leader["command"][-1]
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in leader["command"][-1]
    assert worker["command"][-1] == "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert "readinessProbe" in leader and "readinessProbe" not in worker
    service = yaml.safe_load(art.k8s["service.yaml"])
    assert service["spec"]["selector"] == {"leaderworkerset.sigs.k8s.io/name": "llama3-1-405b-vllm", "role": "leader"}


def _pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "Deployment":
        return [obj["spec"]["template"]["spec"]]
    tmpl = obj["spec"]["leaderWorkerTemplate"]
    return [tmpl["leaderTemplate"]["spec"], tmpl["workerTemplate"]["spec"]]


@pytest.mark.parametrize("backend", [pytest.param(b, id=b.value) for b in ADAPTERS])
@pytest.mark.parametrize("shape", ["one-node", "two-nodes"])
def test_every_pod_keeps_the_hf_cache_on_a_persistent_volume(backend, shape, plans):
    """A restarted pod finds the weights: the cache is a PVC mounted where HF_HOME points, on leaders and workers."""
    from backends.k8s import CACHE_CLAIM, HF_CACHE_PATH

    art = _rendered(backend, shape, plans)
    pods = [spec for text in art.k8s.values() for obj in [yaml.safe_load(text)]
            if obj["kind"] in ("Deployment", "LeaderWorkerSet") for spec in _pod_specs(obj)]
    assert len(pods) == (1 if shape == "one-node" else 2)
    for spec in pods:
        volume = next(v for v in spec["volumes"] if v["name"] == "hf-cache")
        assert volume == {"name": "hf-cache", "persistentVolumeClaim": {"claimName": CACHE_CLAIM}}
        container = spec["containers"][0]
        assert {"name": "hf-cache", "mountPath": HF_CACHE_PATH} in container["volumeMounts"]
        assert {"name": "HF_HOME", "value": HF_CACHE_PATH} in container["env"]
    assert "HF_HOME" not in art.env  # the local launch keeps the user's own cache


def test_schema_rejects_what_the_lws_api_rejects():
    bad = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": {"name": "x"},
           "spec": {"leaderWorkerTemplate": {"size": 0, "restartPolicy": "Always",
                                             "workerTemplate": {"spec": {"containers": [{"name": "c"}]}}}}}
    with pytest.raises(jsonschema.ValidationError, match="0 is less than the minimum of 1"):
        jsonschema.validate(bad, LWS_SCHEMA)


def test_written_artifacts_are_deterministic_and_relative(plans, tmp_path):
    req, compiled = plans["one-node"]
    plan = dataclasses.replace(compiled.plan, backend=BackendName.trtllm)
    launch = rendered(dataclasses.replace(compiled, plan=plan), req).launch
    assert {f.name for f in dataclasses.fields(launch)} == {"argv", "env", "docker", "files"}
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in write(launch, tmp_path / "a")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in write(launch, tmp_path / "b")}
    assert first == second
    names = {str(p) for p in first}
    assert {"argv.txt", "env", "docker.sh", "extra_llm_api_options.yaml", "k8s/deployment.yaml",
            "k8s/service.yaml", "k8s/configmap.yaml"} <= names
    import shlex

    assert tuple(shlex.split(first[Path("argv.txt")].decode())) == launch.argv
    for text in first.values():
        assert str(tmp_path).encode() not in text
    assert b"HF_TOKEN=${HF_TOKEN}" in first[Path("env")]


def test_two_node_trtllm_plan_is_one_mpi_world_over_the_group(plans):
    """TensorRT-LLM over two nodes: the leader runs mpirun with one rank per GPU under trtllm-llmapi-launch over the
    group's pods, the workers run sshd, both mount the SSH keys; the host list the leader computes from LWS's pod
    names is right (run in a real shell)."""
    import subprocess

    from backends.k8s import mpi_hosts

    art = _rendered(BackendName.trtllm, "two-nodes", plans)
    lws = yaml.safe_load(art.k8s["leaderworkerset.yaml"])["spec"]["leaderWorkerTemplate"]
    leader = lws["leaderTemplate"]["spec"]["containers"][0]["command"][2]
    worker = lws["workerTemplate"]["spec"]["containers"][0]["command"][2]
    assert "exec mpirun --allow-run-as-root -np 16 --host \"$MPI_HOSTS\"" in leader
    assert "trtllm-llmapi-launch trtllm-serve meta-llama/Meta-Llama-3.1-405B-Instruct --tp_size 8 --pp_size 2" in leader
    assert worker.endswith("/usr/sbin/sshd -p 2222 -D")
    for role in ("leaderTemplate", "workerTemplate"):
        spec = lws[role]["spec"]
        assert {"name": "ssh", "secret": {"secretName": "mpi-ssh", "defaultMode": 0o600}} in spec["volumes"]
    req, compiled = plans["two-nodes"]
    plan = dataclasses.replace(compiled.plan, backend=BackendName.trtllm)
    out = subprocess.run(["sh", "-c", mpi_hosts(plan) + 'echo "$MPI_HOSTS"'], capture_output=True, text=True,
                         env={"LWS_LEADER_ADDRESS": "llama-0.llama.ns", "LWS_GROUP_SIZE": "3", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "llama-0.llama.ns:8,llama-0-1.llama.ns:8,llama-0-2.llama.ns:8", out.stderr
    assert "MPI_HOSTS=<node 0>:8" in art.docker and '"$HOME/.ssh/mpi":/root/.ssh:ro' in art.docker
