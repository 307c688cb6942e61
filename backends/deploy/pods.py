"""Pieces every Kubernetes deploy target puts in its pods: the HF token from the `hf-token` Secret, the HF cache
claim, and the GPU resource name (the same conventions as backends/k8s.py, so one Secret and one claim serve all)."""

from backends.base import on_rocm
from backends.k8s import CACHE_CLAIM, HF_CACHE_PATH, SECRET_NAME
from planner.specs import GpuSpec


def hf_env() -> list[dict]:
    """HF_TOKEN from the Secret (optional: public models need none) and HF_HOME on the cache volume."""
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "HF_TOKEN",
                                                                 "optional": True}}},
            {"name": "HF_HOME", "value": HF_CACHE_PATH}]


def cache_volume() -> tuple[dict, dict]:
    """(volume, mount) of the shared Hugging Face cache claim."""
    return ({"name": "hf-cache", "persistentVolumeClaim": {"claimName": CACHE_CLAIM}},
            {"name": "hf-cache", "mountPath": HF_CACHE_PATH})


def gpu_resource(gpu: GpuSpec) -> str:
    """nvidia.com/gpu, or amd.com/gpu on AMD Instinct (backends/k8s.py gpu_resource says where each is read)."""
    return "amd.com/gpu" if on_rocm(gpu) else "nvidia.com/gpu"
