"""The `docker run` line(s) of a Server: the official image at its pinned tag, the same flags as the local argv.

The line is meant to run from the artifact folder (docker.sh does `cd "$(dirname "$0")"`): config files are
mounted from $PWD, the Hugging Face cache from $HOME, and the token is passed by name (`-e HF_TOKEN`, no value).
"""

import shlex
from typing import TYPE_CHECKING

from planner.plan import Plan

if TYPE_CHECKING:  # server imports this module
    from backends.server import Server

SHM = "--shm-size=16g"  # NCCL and the engines' worker processes share tensors through /dev/shm
# ROCm containers reach the GPUs through the kernel driver's device nodes (no container toolkit): the KFD compute
# interface and the DRI render nodes, with the video group that owns them. vLLM's ROCm install docs
# (docs/getting_started/installation/gpu.rocm.inc.md, vllm-project/vllm#32580) and AMD's ROCm vLLM/SGLang pages run
# `--device /dev/kfd --device /dev/dri --group-add=video --ipc=host` (plus SYS_PTRACE/seccomp for debuggers, which
# serving does not need).
ROCM_DEVICES = ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"]
HF_CACHE = '"$HOME/.cache/huggingface":/root/.cache/huggingface'
SSH_KEYS = '"$HOME/.ssh/mpi":/root/.ssh:ro'  # an MPI launch (TensorRT-LLM over nodes): the key pair the ranks log in with


def command(server: "Server", plan: Plan, config_dir: str) -> str:
    """One `docker run` line; for a multi-node plan a shell `case` that runs the leader's or a worker's line."""
    if server.multinode is None:
        ports = [server.port] + ([server.metrics_port] if server.metrics_port else [])
        return _line(server, plan, config_dir, [w for p in ports for w in ("-p", f"{p}:{p}")],
                     list(server.container_command) + list(server.container_args))
    mn = server.multinode
    net = ["--network=host", "-e", "LEADER_ADDRESS", "-e", "NODE_RANK"]
    leader, worker = mn.commands("$LEADER_ADDRESS", "$NODE_RANK")
    mpi = []
    if "$MPI_HOSTS" in leader:
        net += ["-e", "MPI_HOSTS"]
        mpi = [f"#   MPI_HOSTS=<node 0>:{plan.gpus_per_replica // plan.nodes},<node 1>:... on node 0 (Open MPI --host); "
               "~/.ssh/mpi on every node holds the key pair and authorized_keys the ranks log in with"]
    return "\n".join([
        f"# {plan.nodes} nodes per replica, following {mn.source}. On each node:",
        "#   LEADER_ADDRESS=<node 0's address> ./docker.sh leader                  (node 0)",
        f"#   LEADER_ADDRESS=<node 0's address> NODE_RANK=<1..{plan.nodes - 1}> ./docker.sh worker",
        *mpi,
        'case "${1:?leader or worker}" in',
        "  leader) NODE_RANK=0 " + _line(server, plan, config_dir, net, ["sh", "-c", leader]) + " ;;",
        "  worker) " + _line(server, plan, config_dir, net, ["sh", "-c", worker]) + " ;;",
        "esac",
    ])


def _line(server: "Server", plan: Plan, config_dir: str, network: list[str], tail: list[str]) -> str:
    words = ["docker", "run", "--rm"]
    if server.gpu and server.rocm:
        words += ROCM_DEVICES + ["--ipc=host", SHM]
    elif server.gpu:
        words += ["--gpus", "all", "--ipc=host", SHM]
    words += network
    words += ["-e", "HF_TOKEN"]  # by name: docker copies the caller's value, the line never holds it
    for key in server.secret_env:  # the API key too: by name
        words += ["-e", key]
    for key, value in server.env:
        words += ["-e", f"{key}={value}"]
    quoted = [shlex.quote(w) for w in words]
    quoted += ["-v", HF_CACHE]
    if server.multinode is not None and server.multinode.ssh_secret:  # an MPI launch: the ranks' SSH keys
        quoted += ["-v", SSH_KEYS]
    if plan.model_path.startswith("/"):  # a local checkpoint: mounted at the same path, read-only
        quoted += ["-v", shlex.quote(f"{plan.model_path}:{plan.model_path}:ro")]
    for name, _ in server.files:
        quoted += ["-v", f'"$PWD/{name}":{shlex.quote(f"{config_dir}/{name}")}:ro']
    quoted += [_word(w, server.secret_env) for w in [server.image, *tail]]
    return " ".join(quoted)


def _word(word: str, secret_env: tuple[str, ...]) -> str:
    """A word of the line, quoted; a `${NAME}` reference to a secret stays a double-quoted shell expansion."""
    if word.startswith("${") and word[2:-1] in secret_env and word.endswith("}"):
        return f'"{word}"'
    return shlex.quote(word)
