"""Backend adapters: one module per serving engine behind one protocol (base); `get(name)` is the registry.

    from backends import get, unsupported
    reason = unsupported(BackendName.trtllm, plan, gpu)   # None, or why (capability + source)
    artifacts = get(BackendName.vllm).render(plan)         # argv, env, docker, k8s, files

Nothing here imports an engine: the modules are data and string building, so the planner works without any
backend installed.
"""

from backends.base import Artifacts, Backend, Capabilities, unsupported
from planner.specs import BackendName

__all__ = ["ADAPTERS", "Artifacts", "Backend", "Capabilities", "get", "unsupported"]


def get(name: BackendName) -> Backend:
    """The adapter for `name` (BackendName.auto is the search's choice, not an adapter: ValueError)."""
    from backends import mii, sglang, tgi, triton_trtllm, triton_vllm, trtllm, vllm

    adapters = {BackendName.vllm: vllm.BACKEND, BackendName.trtllm: trtllm.BACKEND, BackendName.tgi: tgi.BACKEND,
                BackendName.sglang: sglang.BACKEND, BackendName.triton_trtllm: triton_trtllm.BACKEND,
                BackendName.triton_vllm: triton_vllm.BACKEND, BackendName.mii: mii.BACKEND}
    if name not in adapters:
        raise ValueError(f"backend={name.value}: not an adapter; choose one of "
                         f"{', '.join(b.value for b in adapters)}")
    return adapters[name]


ADAPTERS = (BackendName.vllm, BackendName.trtllm, BackendName.tgi, BackendName.sglang, BackendName.triton_trtllm,
            BackendName.triton_vllm, BackendName.mii)
