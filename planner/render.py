"""Render a plan into its backend's native artifacts: the plan document's `launch:` block, and files on disk.

    compiled = rendered(compiled, request)        # compiled.launch: argv, env, docker, files (DESIGN.md `launch:`)
    write(compiled.launch, artifact_dir(plan_path))   # plans/<name>/argv.txt, env, docker.sh, k8s/*.yaml, files

Pure translation: the backend adapter's flag table decides every flag (backends/); nothing here changes a number.
Deterministic: same plan → same bytes (sorted env, fixed file order, no timestamps, no absolute paths except a
local model_path the plan itself names). Secrets are `${NAME}` references only.
"""

import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Optional

from backends import Artifacts, get, unsupported
from planner.errors import InputError
from planner.plan import CompiledPlan, Launch, Plan
from planner.specs import BackendName, Request

LAUNCH_KEYS = ("argv", "env", "docker", "files")
K8S_DIR = "k8s"


def rendered(compiled: CompiledPlan, request: Request, api_key_env: Optional[str] = None,
             profile: Optional[str] = None) -> CompiledPlan:
    """The compiled plan with its `launch` artifacts; InputError when the backend cannot serve it. With
    `api_key_env` the server requires the API key that environment variable holds (`${NAME}` only); with
    profile="nsys" its argv runs under Nsight Systems (planner/profile.py). Warnings the adapter raises while
    rendering (e.g. a memory fraction the engine reads differently) join the plan's notes."""
    from backends.autoscale_k8s import note

    art = artifacts(compiled.plan, request, api_key_env)
    scaling = note(compiled.plan)
    warnings = art.warnings + ((scaling,) if scaling else ())
    block = launch_block(art)
    if profile == "nsys":
        from planner import profile as nsys

        nsys.check(compiled.plan, request.hw.gpu)
        block = nsys.wrap(block, k8s_name(request.model.name, compiled.plan.backend))
        warnings += (nsys.NOTE,)
    notes = compiled.notes + tuple(w for w in warnings if w not in compiled.notes)
    return replace(compiled, launch=block, notes=notes)


def artifacts(plan: Plan, request: Request, api_key_env: Optional[str] = None) -> Artifacts:
    """The backend's typed Artifacts for `plan`."""
    if plan.backend is BackendName.auto:
        raise InputError("plan.backend=auto: a compiled plan names its backend. Fix: re-plan with this planner "
                         "version, or pin plan.backend=vllm.")
    reason = unsupported(plan.backend, plan, request.hw.gpu, request.model)
    if reason:
        raise InputError(f"backend={plan.backend.value}: cannot render this plan: {reason}. Fix: pick another "
                         "backend (backend=vllm renders every layout the planner makes) or pin the plan field "
                         "the reason names.")
    name = k8s_name(request.model.name, plan.backend)
    if plan.disaggregation is not None:  # prefill and decode pools behind a router
        from backends import disagg

        return disagg.render(plan, name, api_key_env, request.hw.gpu)
    return get(plan.backend).render(plan, name, api_key_env, request.hw.gpu)


def launch_block(art: Artifacts) -> Launch:
    """Artifacts as the plan's `launch:` block; Kubernetes manifests sit in files under k8s/."""
    files = dict(art.files)
    files.update({f"{K8S_DIR}/{name}": text for name, text in art.k8s.items()})
    return Launch(argv=tuple(art.argv), env=dict(art.env), docker=art.docker, files=files)


def write(launch: Launch, outdir: Path) -> list[Path]:
    """Write argv.txt, env, docker.sh and every file of `launch` under `outdir`; unchanged files are not
    rewritten. Returns the paths, in a fixed order."""
    texts = {
        "argv.txt": shlex.join(launch.argv) + "\n",
        "env": "".join(f"{k}={v}\n" for k, v in sorted(launch.env.items())),
        "docker.sh": _docker_script(launch.docker),
        **launch.files,
    }
    written = []
    for rel, text in texts.items():
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        if rel == "docker.sh":
            path.chmod(0o755)
        written.append(path)
    return written


def artifact_dir(plan_path: Path) -> Path:
    """plans/<name>.yaml → plans/<name>/ (the artifacts sit beside their plan)."""
    return plan_path.with_suffix("")


def k8s_name(model_name: str, backend: BackendName) -> str:
    """A DNS-1123 label for the Kubernetes objects: <model>-<backend>, lower case, '.' and '_' as '-'."""
    label = re.sub(r"[^a-z0-9-]+", "-", f"{model_name}-{backend.value}".lower()).strip("-")
    return label[:63].rstrip("-")


def _docker_script(docker: str) -> str:
    return (
        "#!/usr/bin/env bash\n"
        "# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment\n"
        "# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.\n"
        "set -euo pipefail\n"
        'cd "$(dirname "$0")"\n'
        f"{docker}\n"
    )
