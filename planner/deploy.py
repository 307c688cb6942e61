"""Render a compiled plan for cluster stacks (`action=render deploy=kserve|llmd|dynamo|lws|ray|slurm|all`).

The files join the plan's `launch.files` under deploy/<target>/ and are written beside the plan like the engine's
own artifacts. A stack that cannot serve the plan says why: an error for the one target asked for, a note per
target with deploy=all (which renders every stack that can serve the plan).
"""

import logging
from dataclasses import replace

from backends import unsupported
from backends.deploy import NAMES, get
from planner.errors import InputError
from planner.plan import CompiledPlan
from planner.specs import Request

log = logging.getLogger(__name__)
ALL = "all"
DIR = "deploy"
# Stacks whose files carry no scaling here (kserve: spec.scaling; dynamo, lws: KEDA ScaledObjects), and why
UNSCALED = {"llmd": "llm-d-modelservice's values take no autoscaler here; apply the KEDA ScaledObject of k8s/ to the "
                    "decode Deployment the chart creates",
            "ray": "Ray Serve's deployment_config.autoscaling_config is not rendered yet; num_replicas is fixed",
            "slurm": "a batch job has a fixed size: submit one job per replica the bands ask for"}


def reason(target: str, compiled: CompiledPlan, request: Request):
    """Why `target` cannot serve the compiled plan (the engine's reason first), or None."""
    plan, gpu = compiled.plan, request.hw.gpu
    return unsupported(plan.backend, plan, gpu) or get(target).unsupported(plan, gpu)


def with_deployments(compiled: CompiledPlan, request: Request, target: str) -> CompiledPlan:
    """`compiled` (already rendered: launch is set) with the stack files of `target` (or every target) added."""
    from planner.render import k8s_name

    names = NAMES if target == ALL else (target,)
    name = k8s_name(request.model.name, compiled.plan.backend)
    files, notes = dict(compiled.launch.files), list(compiled.notes)
    for each in names:
        why = reason(each, compiled, request)
        if why:
            if target != ALL:
                raise InputError(f"deploy={each}: cannot render this plan: {why}. Fix: deploy=all renders every "
                                 "stack that can serve the plan and says why not for the others.")
            notes.append(f"deploy={each}: not rendered: {why}")
            log.warning("deploy=%s: not rendered: %s", each, why)
            continue
        rendered = get(each).render(compiled.plan, name, request.hw.gpu)
        if compiled.plan.autoscaling and each in UNSCALED:
            notes.append(f"deploy={each}: plan.autoscaling is not rendered for this stack: {UNSCALED[each]}")
        files.update({f"{DIR}/{each}/{file}": text for file, text in rendered.files.items()})
        notes += [n for n in rendered.notes if n not in notes]
        log.warning("deploy=%s: %s", each, ", ".join(f"{DIR}/{each}/{f}" for f in rendered.files))
    return replace(compiled, launch=replace(compiled.launch, files=files), notes=tuple(notes))
