"""Deploy targets: the cluster stacks a compiled plan renders for (`action=render deploy=NAME`), one module each.

    from backends.deploy import TARGETS, get
    reason = get("kserve").unsupported(plan, gpu)      # None, or why this stack cannot serve the plan (with source)
    files = get("kserve").render(plan, name, gpu).files  # file name → text

Each module declares one table (base.DeployTable) of where the stack reads every planned value; the engine's own flag
table (backends/<engine>.py) decides the engine flags, so a stack carries exactly what the plan says.
"""

from backends.deploy.base import Deployment, DeployTable, Target

__all__ = ["NAMES", "Deployment", "DeployTable", "Target", "get", "targets"]

NAMES = ("kserve", "llmd", "dynamo", "lws", "ray", "slurm")


def targets() -> dict[str, Target]:
    """Every deploy target by its `deploy=` name, in a fixed order."""
    from backends.deploy import dynamo, kserve, llmd, lws, ray, slurm

    modules = (kserve, llmd, dynamo, lws, ray, slurm)
    return {m.TARGET.name: m.TARGET for m in modules}


def get(name: str) -> Target:
    """The target called `name` (KeyError: not a target; the config's enum screens names first)."""
    return targets()[name]
