"""API keys in the rendered artifacts (issue 22, item 2): the engine's own flag with a `${NAME}` reference, docker
passing the variable by name, Kubernetes from a Secret; never the key's value; engines without a key option refuse."""

import dataclasses

import pytest
import yaml
from conftest import compiled_or_closest, request_for

from backends import get
from planner.errors import InputError
from planner.specs import BackendName

SECRET = "sk-must-never-be-written-42"


@pytest.fixture(scope="module")
def plans():
    one = compiled_or_closest(request_for("model=llama3-70b", "hw=h100x4")).plan
    two = compiled_or_closest(request_for("model=llama3.1-405b", "hw=2xh100x8", "precision=bf16")).plan
    return one, two


def _all_text(art) -> str:
    return "\n".join([*art.argv, *art.env.values(), art.docker, *art.k8s.values(), *art.files.values()])


@pytest.mark.parametrize("backend, flag", [
    pytest.param(BackendName.vllm, "--api-key", id="vllm"),
    pytest.param(BackendName.sglang, "--api-key", id="sglang"),
    pytest.param(BackendName.tgi, "--api-key", id="tgi"),
])
def test_api_key_is_rendered_as_a_reference_everywhere(plans, monkeypatch, backend, flag):
    monkeypatch.setenv("MY_KEY", SECRET)
    plan = dataclasses.replace(plans[0], backend=backend)
    art = get(backend).render(plan, "m", api_key_env="MY_KEY")
    i = art.argv.index(flag)
    assert art.argv[i + 1] == "${MY_KEY}" and art.env["MY_KEY"] == "${MY_KEY}"
    assert "-e MY_KEY " in art.docker and f'{flag} "${{MY_KEY}}"' in art.docker
    pod = yaml.safe_load(art.k8s["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in pod["env"]}
    assert env["MY_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "api-key", "key": "MY_KEY"}
    assert pod["args"][pod["args"].index(flag) + 1] == "$(MY_KEY)"
    assert SECRET not in _all_text(art)


def test_without_api_key_env_nothing_changes(plans):
    art = get(BackendName.vllm).render(plans[0], "m")
    assert "--api-key" not in _all_text(art) and "api-key" not in _all_text(art)


def test_multi_node_leader_gets_the_key_from_its_environment(plans):
    art = get(BackendName.vllm).render(plans[1], "m", api_key_env="VLLM_API_KEY")
    lws = yaml.safe_load(art.k8s["leaderworkerset.yaml"])["spec"]["leaderWorkerTemplate"]
    leader = lws["leaderTemplate"]["spec"]["containers"][0]
    assert leader["command"][-1].endswith('--api-key "$VLLM_API_KEY"')
    assert "VLLM_API_KEY" in {e["name"] for e in leader["env"]}
    assert "--api-key" not in lws["workerTemplate"]["spec"]["containers"][0]["command"][-1]


@pytest.mark.parametrize("backend, name, match", [
    pytest.param(BackendName.trtllm, "VLLM_API_KEY", "backend=trtllm has no API-key option.*serve.py.*Fix:",
                 id="trtllm-has-no-key-option"),
    pytest.param(BackendName.vllm, "sk-1234", "api_key_env='sk-1234': not an environment variable name.*Fix:",
                 id="a-key-value-instead-of-a-name"),
])
def test_api_key_that_cannot_be_rendered_is_an_input_error(plans, backend, name, match):
    with pytest.raises(InputError, match=match):
        get(backend).render(dataclasses.replace(plans[0], backend=backend), "m", api_key_env=name)
