"""What a backend contributes for one plan (`Server`), and `assemble()`: Server → Artifacts (argv, docker, k8s).

Each backend turns a plan into a `Server` through its flag table; everything container- and cluster-shaped
(docker line, Deployment/LeaderWorkerSet, ConfigMap for config files, the HF token Secret reference) is built
here the same way for all of them.
"""

import shlex
from dataclasses import dataclass, field
from typing import Optional

from backends import docker, k8s
from backends.base import Artifacts
from planner.plan import Plan
from planner.specs import BackendName

CONFIG_DIR = "/etc/planner"  # where config files are mounted inside containers
HF_TOKEN = "HF_TOKEN"  # read by huggingface_hub in every engine here; passed by reference only
SECRET_ENV = {HF_TOKEN: "${HF_TOKEN}"}


@dataclass(frozen=True)
class MultiNode:
    """Per-role container commands of a multi-node replica; `{leader}` and `{rank}` are placeholders that k8s fills
    with LeaderWorkerSet's $(LWS_LEADER_ADDRESS) / $(LWS_WORKER_INDEX) and docker with $LEADER_ADDRESS / $NODE_RANK."""

    leader: str  # one shell command line (run with sh -c)
    worker: str
    source: str  # the example this layout follows

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
    gpu: bool = True  # False: a CPU plan (no GPU resources, no --gpus)
    rocm: bool = False  # an AMD GPU: /dev/kfd + /dev/dri in docker, amd.com/gpu in Kubernetes
    multinode: Optional[MultiNode] = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def assemble(server: Server, plan: Plan, name: str) -> Artifacts:
    """The artifacts of `server` for `plan`; `name` labels the Kubernetes objects (a DNS-1123 label)."""
    env = dict(sorted({**dict(server.env), **SECRET_ENV}.items()))
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
        warnings=server.warnings,
    )


def shell_line(words: tuple[str, ...]) -> str:
    """Words as one shell command line, quoted only where needed."""
    return shlex.join(words)
