"""What a backend contributes for one plan (`Server`), and `assemble()`: Server → Artifacts (argv, docker, k8s).

Each backend turns a plan into a `Server` through its flag table; everything container- and cluster-shaped
(docker line, Deployment/LeaderWorkerSet, ConfigMap for config files, the HF token Secret reference) is built
here the same way for all of them.
"""

import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Optional

from backends import docker, k8s
from backends.base import Artifacts
from planner.errors import InputError
from planner.plan import Plan
from planner.specs import BackendName

CONFIG_DIR = "/etc/planner"  # where config files are mounted inside containers
HF_TOKEN = "HF_TOKEN"  # read by huggingface_hub in every engine here; passed by reference only
SECRET_ENV = {HF_TOKEN: "${HF_TOKEN}"}


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ApiKey:
    """How an engine takes the API key its OpenAI endpoints require: the flag (None: it has none) and the source."""

    flag: Optional[str]
    source: str


def secret_ref(name: str) -> str:
    """The `${NAME}` reference a rendered artifact carries instead of a secret's value."""
    return "${" + name + "}"


@dataclass(frozen=True)
class MultiNode:
    """Per-role container commands of a multi-node replica; `{leader}` and `{rank}` are placeholders that k8s fills
    with LeaderWorkerSet's $(LWS_LEADER_ADDRESS) / $(LWS_WORKER_INDEX) and docker with $LEADER_ADDRESS / $NODE_RANK.

    An MPI launch (TensorRT-LLM) reads the replica's hosts from `$MPI_HOSTS` (`addr:slots,...`, Open MPI's --host
    form): Kubernetes computes it from LeaderWorkerSet's pod names, docker takes it from the caller; its ranks start
    over SSH, with the keys of the Secret `ssh_secret` (Kubernetes) mounted at /root/.ssh."""

    leader: str  # one shell command line (run with sh -c)
    worker: str
    source: str  # the example this layout follows
    ssh_secret: Optional[str] = None  # an MPI launch: the Secret with the SSH keys the ranks log in with

    def commands(self, leader_address: str, rank: str) -> tuple[str, str]:
        """(leader, worker) command lines with the placeholders filled (str.replace: JSON in flags has braces)."""
        def fill(cmd: str) -> str:
            return cmd.replace("{leader}", leader_address).replace("{rank}", rank)
        return fill(self.leader), fill(self.worker)


@dataclass(frozen=True)
class Server:
    """One backend's launch of one plan, before it is dressed as docker/k8s artifacts."""

    backend: BackendName
    image: str
    command: tuple[str, ...]  # local program + subcommand, e.g. ("trtllm-serve",)
    container_command: tuple[str, ...]  # what the container runs before `args` (() = the image's entrypoint)
    args: tuple[str, ...]  # flags as run locally (config files relative to the artifact folder)
    container_args: tuple[str, ...]  # the same flags as run in a container (config files under CONFIG_DIR)
    env: tuple[tuple[str, str], ...]  # non-secret environment from the flag table and the backend
    files: tuple[tuple[str, str], ...] = ()  # config file name → text
    port: int = 8000
    health_path: str = "/health"
    metrics_path: str = "/metrics"
    metrics_port: Optional[int] = None  # a separate Prometheus port (Triton's 8002); None: served on `port`
    gpu: bool = True  # False: a CPU plan (no GPU resources, no --gpus)
    rocm: bool = False  # an AMD GPU: /dev/kfd + /dev/dri in docker, amd.com/gpu in Kubernetes
    multinode: Optional[MultiNode] = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    api_key: ApiKey = ApiKey(None, "not checked for this engine")
    secret_env: tuple[str, ...] = ()  # environment variables passed by name from a secret store (besides HF_TOKEN)


def with_api_key(server: Server, api_key_env: str) -> Server:
    """`server` requiring the API key held by the environment variable `api_key_env`: the engine's flag with a
    `${NAME}` reference (docker expands it from the caller's environment, Kubernetes from a Secret), never a value.
    InputError when the name is not an environment variable name or the engine has no API-key option."""
    if not _ENV_NAME.fullmatch(api_key_env):
        raise InputError(f"api_key_env={api_key_env!r}: not an environment variable name (letters, digits, _). "
                         "It names the variable that holds the key, never the key itself. Fix: "
                         "export VLLM_API_KEY=<key> and pass api_key_env=VLLM_API_KEY.")
    flag = server.api_key.flag
    if flag is None:
        raise InputError(f"api_key_env={api_key_env}: backend={server.backend.value} has no API-key option "
                         f"({server.api_key.source}), so its server would not check the key. Fix: backend=vllm, "
                         "sglang or tgi, or leave api_key_env unset and put an authenticating proxy in front.")
    ref = secret_ref(api_key_env)
    multinode = server.multinode
    if multinode is not None:  # the leader serves HTTP; its `sh -c` line expands the variable from the environment
        multinode = replace(multinode, leader=f'{multinode.leader} {flag} "${api_key_env}"')
    return replace(server, args=server.args + (flag, ref), container_args=server.container_args + (flag, ref),
                   multinode=multinode, secret_env=server.secret_env + (api_key_env,))


def assemble(server: Server, plan: Plan, name: str, api_key_env: Optional[str] = None) -> Artifacts:
    """The artifacts of `server` for `plan`; `name` labels the Kubernetes objects (a DNS-1123 label). With
    `api_key_env`, the server requires the key that environment variable holds (see with_api_key)."""
    if api_key_env:
        server = with_api_key(server, api_key_env)
    secrets = {**SECRET_ENV, **{k: secret_ref(k) for k in server.secret_env}}
    env = dict(sorted({**dict(server.env), **secrets}.items()))
    files = dict(sorted(server.files))
    return Artifacts(
        backend=server.backend,
        image=server.image,
        argv=server.command + server.args,
        env=env,
        docker=docker.command(server, plan, CONFIG_DIR),
        k8s=k8s.manifests(server, plan, name, CONFIG_DIR),
        files=files,
        port=server.port,
        health_path=server.health_path,
        metrics_path=server.metrics_path,
        metrics_port=server.metrics_port,
        warnings=server.warnings,
    )


def shell_line(words: tuple[str, ...]) -> str:
    """Words as one shell command line, quoted only where needed."""
    return shlex.join(words)
