"""Render a plan into its backend's native artifacts: the plan document's `launch:` block, and files on disk.

    launch = render(compiled, request)            # {argv, env, docker, files} (DESIGN.md `launch:`)
    write(launch, artifact_dir(plan_path))        # plans/<name>/argv.txt, env, docker.sh, k8s/*.yaml, config files

Pure translation: the backend adapter's flag table decides every flag (backends/); nothing here changes a number.
Deterministic: same plan → same bytes (sorted env, fixed file order, no timestamps, no absolute paths except a
local model_path the plan itself names). Secrets are `${NAME}` references only.
"""

import re
import shlex
from pathlib import Path
from typing import Union

from backends import Artifacts, get, unsupported
from planner.errors import InputError
from planner.plan import CompiledPlan, Plan
from planner.specs import BackendName, Dtype, KvPrecision, Quantization, Request

LAUNCH_KEYS = ("argv", "env", "docker", "files")
K8S_DIR = "k8s"


def render(source: Union[CompiledPlan, dict], request: Request) -> dict:
    """The `launch:` block for a compiled plan or a plan document; InputError when the backend cannot serve it."""
    return launch_block(artifacts(source, request))


def artifacts(source: Union[CompiledPlan, dict], request: Request) -> Artifacts:
    """The backend's typed Artifacts for the plan in `source` (a CompiledPlan or a plan document's dict)."""
    plan = source.plan if isinstance(source, CompiledPlan) else plan_from_doc(source)
    if plan.backend is BackendName.auto:
        raise InputError("plan.backend=auto: a compiled plan names its backend. Fix: re-plan with this planner "
                         "version, or pin plan.backend=vllm.")
    reason = unsupported(plan.backend, plan, request.hw.gpu)
    if reason:
        raise InputError(f"backend={plan.backend.value}: cannot render this plan: {reason}. Fix: pick another "
                         "backend (backend=vllm renders every layout the planner makes) or pin the plan field "
                         "the reason names.")
    return get(plan.backend).render(plan, k8s_name(request.model.name, plan.backend), request.hw.gpu)


def launch_block(art: Artifacts) -> dict:
    """Artifacts as the plan document's `launch:` mapping; Kubernetes manifests sit in files under k8s/."""
    files = dict(art.files)
    files.update({f"{K8S_DIR}/{name}": text for name, text in art.k8s.items()})
    return {"argv": list(art.argv), "env": dict(art.env), "docker": art.docker, "files": files}


def write(launch: dict, outdir: Path) -> list[Path]:
    """Write argv.txt, env, docker.sh and every file of `launch` under `outdir`; unchanged files are not
    rewritten. Returns the paths, in a fixed order."""
    texts = {
        "argv.txt": shlex.join(launch["argv"]) + "\n",
        "env": "".join(f"{k}={v}\n" for k, v in sorted(launch["env"].items())),
        "docker.sh": _docker_script(launch["docker"]),
        **launch["files"],
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


def plan_from_doc(doc: dict) -> Plan:
    """The Plan of a plan document (document.build wrote enums by value)."""
    fields = dict(doc["plan"])
    enums = {"backend": BackendName, "dtype": Dtype, "quantization": Quantization, "kv_cache_dtype": KvPrecision}
    for name, enum_type in enums.items():
        fields[name] = enum_type(fields[name])
    return Plan(**fields)


def _docker_script(docker: str) -> str:
    return (
        "#!/usr/bin/env bash\n"
        "# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment\n"
        "# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.\n"
        "set -euo pipefail\n"
        'cd "$(dirname "$0")"\n'
        f"{docker}\n"
    )
