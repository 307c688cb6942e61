"""Kubernetes manifests of a Server: Deployment + Service for one node per replica, LeaderWorkerSet + Service for
several (leaderworkerset.x-k8s.io/v1), a ConfigMap for config files; the HF token always from a Secret.

Multi-node layout follows the LWS project's examples (kubernetes-sigs/lws docs/examples/vllm/GPU/lws.yaml and
docs/examples/sglang/lws.yaml): leader pods labelled role=leader carry the server and the readiness probe, the
Service selects them, and workers find the leader through $(LWS_LEADER_ADDRESS)
(api/leaderworkerset/v1/leaderworkerset_types.go: LwsLeaderAddress, LwsGroupSize, LwsWorkerIndex).

Model cache: every pod (Deployment pods, LWS leaders and workers) mounts the PersistentVolumeClaim `hf-cache` at
HF_CACHE_PATH and sets HF_HOME to it (huggingface_hub keeps its hub cache under $HF_HOME/hub), so a restarted or
rescheduled pod finds the weights instead of downloading them again. Like the `hf-token` Secret it is created once
per namespace, sized and classed for the cluster (the checkpoint's size and a storage class that offers
ReadWriteMany, so replicas and the nodes of a multi-node replica share one download; ReadWriteOnce serves one pod
on one node): `{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "hf-cache"}, "spec":
{"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "<checkpoint size + room>"}}}}`. Pods stay
Pending (event: persistentvolumeclaim "hf-cache" not found) until it exists.
"""

from typing import TYPE_CHECKING, Optional

import yaml

from planner.plan import Plan

if TYPE_CHECKING:  # server imports this module
    from backends.server import Server

SECRET_NAME = "hf-token"  # kubectl create secret generic hf-token --from-literal=HF_TOKEN=...
CACHE_CLAIM = "hf-cache"  # PersistentVolumeClaim holding the Hugging Face cache (module docstring)
HF_CACHE_PATH = "/root/.cache/huggingface"  # HF_HOME inside the containers (the engines' images run as root)
API_KEY_SECRET = "api-key"  # kubectl create secret generic api-key --from-literal=VLLM_API_KEY=... (the key's name)
STARTUP_BUDGET_S = 1800  # weights of a 400B model take many minutes to load; liveness waits for the startup probe


def manifests(server: "Server", plan: Plan, name: str, config_dir: str) -> dict[str, str]:
    """File name → YAML text, in a fixed order."""
    objects: dict[str, dict] = {}
    if server.files:
        objects["configmap.yaml"] = _configmap(server, name)
    if server.multinode is None:
        objects["deployment.yaml"] = _deployment(server, plan, name, config_dir)
        selector = {"app": name}
    else:
        objects["leaderworkerset.yaml"] = _leaderworkerset(server, plan, name, config_dir)
        selector = {"leaderworkerset.sigs.k8s.io/name": name, "role": "leader"}
    objects["service.yaml"] = _service(server, name, selector)
    out = {file: yaml.safe_dump(obj, sort_keys=False, width=1000) for file, obj in objects.items()}
    from backends import autoscale_k8s

    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name} if server.multinode is None else \
        {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": name}
    out.update(autoscale_k8s.files(plan, {"replicas": target}))
    return out


def gpus_per_pod(plan: Plan) -> int:
    """GPUs one pod asks for: a replica's GPUs spread evenly over its nodes."""
    return plan.gpus_per_replica // plan.nodes


def gpu_resource(server: "Server") -> str:
    """The extended resource the vendor's device plugin advertises: nvidia.com/gpu (NVIDIA k8s-device-plugin) or
    amd.com/gpu (ROCm/k8s-device-plugin: "Exposes AMD GPUs as amd.com/gpu resources",
    instinct.docs.amd.com/projects/k8s-device-plugin)."""
    return "amd.com/gpu" if server.rocm else "nvidia.com/gpu"


def _container(server: "Server", plan: Plan, config_dir: str, command: Optional[list], args: Optional[list],
               probes: bool) -> dict:
    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "HF_TOKEN",
                                                                "optional": True}}}]
    env.append({"name": "HF_HOME", "value": HF_CACHE_PATH})  # huggingface_hub constants: HF_HOME, hub cache under it
    # the API key must exist (optional: false): a server that silently runs without it would be open
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": API_KEY_SECRET, "key": k}}} for k in server.secret_env]
    env += [{"name": k, "value": v} for k, v in server.env]
    c: dict = {"name": server.backend.value, "image": server.image}
    if command:
        c["command"] = command
    if args:
        # `${NAME}` → `$(NAME)`: Kubernetes expands it from the container's env (dependent environment variables)
        refs = {"${" + k + "}": f"$({k})" for k in server.secret_env}
        c["args"] = [refs.get(a, a) for a in args]
    c["env"] = env
    c["ports"] = [{"name": "http", "containerPort": server.port}]
    if server.metrics_port:  # Prometheus on its own port (Triton's --metrics-port)
        c["ports"].append({"name": "metrics", "containerPort": server.metrics_port})
    if server.gpu:
        c["resources"] = {"limits": {gpu_resource(server): gpus_per_pod(plan)}}
    if probes:
        def probe(period_s: int, failures: int) -> dict:
            return {"httpGet": {"path": server.health_path, "port": "http"}, "periodSeconds": period_s,
                    "failureThreshold": failures}
        c["startupProbe"] = probe(10, STARTUP_BUDGET_S // 10)
        c["readinessProbe"] = probe(10, 3)
        c["livenessProbe"] = probe(30, 5)
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "hf-cache", "mountPath": HF_CACHE_PATH}]
    if server.files:
        mounts.append({"name": "config", "mountPath": config_dir, "readOnly": True})
    if plan.model_path.startswith("/"):
        mounts.append({"name": "model", "mountPath": plan.model_path, "readOnly": True})
    c["volumeMounts"] = mounts
    return c


def _volumes(server: "Server", plan: Plan, name: str) -> list[dict]:
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}},
               {"name": "hf-cache", "persistentVolumeClaim": {"claimName": CACHE_CLAIM}}]
    if server.files:
        config_map = {"name": f"{name}-config"}
        if any("/" in file for file, _ in server.files):  # a tree (Triton's model repository): keys map to paths
            config_map["items"] = [{"key": config_key(file), "path": file} for file, _ in sorted(server.files)]
        volumes.append({"name": "config", "configMap": config_map})
    if plan.model_path.startswith("/"):
        volumes.append({"name": "model", "hostPath": {"path": plan.model_path, "type": "Directory"}})
    return volumes


def _pod(server: "Server", plan: Plan, name: str, config_dir: str, labels: dict, command: Optional[list],
         args: Optional[list], probes: bool) -> dict:
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [_container(server, plan, config_dir, command, args, probes)],
                 "volumes": _volumes(server, plan, name)},
    }


def _deployment(server: "Server", plan: Plan, name: str, config_dir: str) -> dict:
    labels = {"app": name}
    command = list(server.container_command) or None
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": labels},
            "template": _pod(server, plan, name, config_dir, labels, command, list(server.container_args), True),
        },
    }


def mpi_hosts(plan: Plan) -> str:
    """Shell that sets $MPI_HOSTS to the replica's pods as Open MPI's --host list (`addr:slots,...`). LeaderWorkerSet
    names a group's pods after its leader: the leader's address is `<leader>.<lws>.<namespace>` and worker i's hostname
    `<leader>-<i>` in the same subdomain (kubernetes-sigs/lws pkg/webhooks/pod_webhook.go: Hostname, Subdomain,
    LWS_LEADER_ADDRESS, LWS_GROUP_SIZE), so worker i is the leader's address with `-i` before its first dot."""
    slots = gpus_per_pod(plan)
    return (f'MPI_HOSTS=$LWS_LEADER_ADDRESS:{slots}; i=1; while [ "$i" -lt "$LWS_GROUP_SIZE" ]; do '
            f'MPI_HOSTS="$MPI_HOSTS,$(echo "$LWS_LEADER_ADDRESS" | sed "s/[.]/-$i./"):{slots}"; i=$((i+1)); done; ')


def _ssh_keys(pod: dict, secret: str) -> dict:
    """`pod` with the Secret `secret` (authorized_keys, id_*) mounted read-only at /root/.ssh for an MPI launch."""
    pod["spec"]["volumes"].append({"name": "ssh", "secret": {"secretName": secret, "defaultMode": 0o600}})
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "ssh", "mountPath": "/root/.ssh", "readOnly": True})
    return pod


def _leaderworkerset(server: "Server", plan: Plan, name: str, config_dir: str) -> dict:
    mn = server.multinode
    leader_cmd, worker_cmd = mn.commands("$(LWS_LEADER_ADDRESS)", "$(LWS_WORKER_INDEX)")
    if "$MPI_HOSTS" in leader_cmd:
        leader_cmd = mpi_hosts(plan) + leader_cmd
    leader = _pod(server, plan, name, config_dir, {"role": "leader"}, ["sh", "-c", leader_cmd], None, True)
    worker = _pod(server, plan, name, config_dir, {"role": "worker"}, ["sh", "-c", worker_cmd], None, False)
    if mn.ssh_secret:
        leader, worker = _ssh_keys(leader, mn.ssh_secret), _ssh_keys(worker, mn.ssh_secret)
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": plan.replicas,
            "leaderWorkerTemplate": {
                "size": plan.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",  # one lost node breaks the whole replica
                "leaderTemplate": leader,
                "workerTemplate": worker,
            },
        },
    }


def _service(server: "Server", name: str, selector: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": server.port, "targetPort": "http", "protocol": "TCP"}]
            + ([{"name": "metrics", "port": server.metrics_port, "targetPort": "metrics", "protocol": "TCP"}]
               if server.metrics_port else []),
        },
    }


def _configmap(server: "Server", name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config"},
        "data": {config_key(file): text for file, text in sorted(server.files)},
    }


def config_key(file: str) -> str:
    """A ConfigMap key for a file of the artifacts (keys are [-._a-zA-Z0-9]+: a path's '/' becomes '__')."""
    return file.replace("/", "__")
