"""The command line: run an action on the composed request, print the product on stdout, map errors to exit codes.

Exit codes (DESIGN.md): 0 ok; 2 bad input; 3 nothing meets the target; 4 launch failed; 5 target missed;
70 internal error (traceback saved to a file, shown with debug=true). Hydra's own exit 1 becomes 2.
"""

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

from planner import actions
from planner.actions import Outcome
from planner.errors import InputError, NoFeasiblePlan, PlannerError

log = logging.getLogger("planner")

_HYDRA_FLAGS = ("-m", "--multirun", "--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i",
                "--shell-completion", "-sc", "--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn",
                "--resolve", "--package", "-p", "--run", "-r", "--version")


def cache_dir() -> Path:
    return Path(os.environ.get("PLANNER_CACHE_DIR", Path.home() / ".cache" / "planner"))


def plan_path(req, out: Optional[str], overrides: list[str] = ()) -> Path:
    """Where the plan is written: `out`, else plans/<model>-<hw>-<target>[-<workload>][-<precision>][-<backend>]
    .yaml, with `-pinned` for pins and a short hash of the inputs when other values were overridden
    (`target.tpot_ms=30`), so a plan file is never overwritten by a different plan."""
    from planner import document

    if out:
        return Path(out)
    parts = [req.model.name, req.hw.name, req.target.name]
    parts += [name for name, default in ((req.workload.name, "chat"), (req.precision.name, "auto"),
                                         (req.backend.name.value, "auto")) if name != default]
    if req.pins.given():
        parts.append("pinned")
    plain = [o.lstrip("+") for o in overrides]  # Hydra's `+key=v` / `++key=v` set the field like `key=v`
    valued = [o for o in plain if "=" in o and "." in o.split("=", 1)[0] and not o.startswith("plan.")
              and not o.startswith(("model.path=", "hydra."))]
    if valued:
        parts.append(document.inputs_sha256(req)[:8])
    return Path("plans") / ("-".join(parts) + ".yaml")


def run(overrides: list[str]) -> Outcome:
    """Compose, then carry out the action for one set of overrides. Raises PlannerError subclasses."""
    from planner import compose, document, search
    from planner import rules as rule_engine

    overrides = compose.split_plan_file(overrides)
    with compose.Composer() as composer:
        cfg = composer.compose(overrides)
        compose.check_options(cfg)  # num_prompts=-5, port=99999...: refused before anything is launched
        fmt, action = cfg.format.value, cfg.action.value
        if cfg.plan_file:
            return actions.saved_plan(cfg, *document.load(cfg.plan_file))
        named = overrides  # the user's: the plan file's name comes from them, not from what is added here
        if cfg.model.name == "tiny-llama" and not cfg.model.path:
            overrides = overrides + _tiny_checkpoint(cfg, action in ("launch", "verify"))
            cfg = composer.compose(overrides)
        rule_set = rule_engine.load(tuple(cfg.rules.extra), tuple(cfg.rules.disable))
        if action == "rules":
            return _list_rules(rule_set, fmt)
        if action == "diagnose":
            return _diagnose(cfg.log, rule_set, fmt)
        cfg, found = compose.resolve(composer, overrides, cfg)
        if found:
            log.warning("hw=%s: %s", cfg.hw.name, found)
        req = compose.to_request(cfg)
        opts = actions.launch_options(cfg, overrides)
    if req.hw.catalog:  # hw=any: the cheapest plan of the GPU catalog
        return _shop(req, rule_set, action, fmt, opts, overrides)
    constraints = rule_engine.evaluate(req, rule_set)
    try:
        compiled = search.compile_plan(req, constraints)
    except NoFeasiblePlan as exc:
        if exc.closest is None:
            raise
        if action not in ("launch", "verify") or not opts.force:  # exit 3 shows the closest plan, then what would
            actions.emit(req, exc.closest, fmt, None)                      # satisfy the target; nothing is launched
            from planner import fixes

            hint = fixes.checked(overrides, req, exc, rule_set) or "Fix: no single change tried (a relaxed SLO, " \
                "less load, FP8, another hw preset) meets the target; relax the target further or split the load."
            exc.args = (f"{exc} {hint}",)
            if action in ("launch", "verify"):
                exc.args = (f"{exc} Nothing was launched: the prediction says this plan misses its target. Fix: "
                            "relax the target as above, or add force=true to launch the closest plan and measure "
                            "it.",)
            raise
        # force=true: the prediction says the target will be missed; launching the closest plan measures it.
        log.warning("%s Launching the closest plan anyway (force=true) to measure it.", exc)
        compiled = exc.closest
    if action == "explain":
        return _explain(req, compiled, constraints, fmt)
    path = plan_path(req, opts.out, named)
    return actions.act(action, req, compiled, path, fmt, opts)


def _tiny_checkpoint(cfg, generate: bool) -> list[str]:
    """The tiny model's checkpoint for this config: on the CPU, in the weight format `precision` names where the
    project builds one that vLLM's CPU build serves (planner/tinyquant.py CPU_CHECKPOINTS); with `generate`
    (launch, verify) its path, built once and reused."""
    from planner import tinyquant
    from planner.specs import DeviceKind

    on_cpu = DeviceKind(cfg.hw.gpu.kind) is DeviceKind.cpu
    quantized = tinyquant.cpu_overrides(cfg.precision.weights, cfg.precision.kv_cache, generate) if on_cpu else []
    if quantized or not generate:
        return quantized
    from planner.tinymodel import ensure_tiny_model

    return [f"model.path={ensure_tiny_model()}"]  # generated once, then reused


def _explain(req, compiled, constraints, fmt: str) -> Outcome:
    """action=explain: every rule, fired or not, then the plan (a table), or the plan document with the trace."""
    from planner import document

    if fmt == "table":
        from planner import present

        present.explain(constraints, req, compiled)
    else:
        doc = document.build(req, compiled)
        _dump({**doc, "trace": [{"rule": e.rule.id, "fired": e.fired, "detail": e.detail}
                                for e in constraints.trace]}, fmt)
    return Outcome(0, (req, compiled))


def _shop(req, rule_set, action: str, fmt: str, opts, overrides: list[str]) -> Outcome:
    """hw=any: plan every hardware option, emit the cheapest that meets the target (its plan file keeps `any` in its
    name) with the next ones and their costs; exit 3 with what would be needed when none meets."""
    import dataclasses

    from planner import hardware, mix, present

    options = hardware.shop(req, rule_set)
    path = plan_path(req, opts.out, overrides)
    if not options[0].meets:
        exc = hardware.no_option(req, options)
        if exc.closest is not None:
            actions.emit(exc.request, exc.closest, fmt, None)  # the closest plan on the hardware it rents
        if fmt == "table":
            present.hardware(options, req.target.percentile)
        raise exc
    chosen_req, compiled = hardware.chosen(req, options)
    best_mix = mix.best_mix(req, options)
    if best_mix is not None:
        compiled = dataclasses.replace(compiled, notes=compiled.notes + (mix.note(best_mix),))
    outcome = actions.act(action, chosen_req, compiled, path, fmt, opts)
    if fmt == "table":
        present.hardware(options, req.target.percentile)
    return outcome


def _list_rules(rule_set, fmt: str) -> Outcome:
    from planner import document, present

    rules = [c.rule for c in rule_set]
    if fmt == "table":
        present.rules_table(rules)
    else:
        sys.stdout.write(document.dumps({"rules": [document.plain(r) for r in rules]}, fmt))
    return Outcome(0)


def _diagnose(path: Optional[str], rule_set, fmt: str) -> Outcome:
    from planner import document, present
    from planner.rules.troubleshoot import diagnose

    if not path:
        raise InputError("action=diagnose needs log=FILE, the server's log. Fix: add log=path/to/server.log.")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"log={path}: no such file. Fix: give the path of a server log.")
    found = diagnose(p.read_text(errors="replace"), rule_set)
    if fmt == "table":
        present.diagnosis(found, path)
    else:
        sys.stdout.write(document.dumps({"log": path, "diagnoses": [
            {"rule": d.rule.id, "line": d.line_no, "text": d.line, "why": d.rule.why, "source": d.rule.source,
             "remedies": [document.plain(r) for r in d.rule.remedies]} for d in found]}, fmt))
    return Outcome(0)


def _version() -> str:
    from planner import __version__

    return __version__


def _dump(doc: dict, fmt: str) -> None:
    from planner import document

    sys.stdout.write(document.dumps(doc, fmt))


def report(exc: BaseException, debug: bool) -> int:
    """Print an error the way DESIGN.md says and return its exit code."""
    stopped = _stopped_by_user(exc)
    if stopped is not None:
        return stopped
    if isinstance(exc, InputError):
        sys.stderr.write("error: " + "\n\nerror: ".join(exc.paragraphs) + "\n")
        return exc.exit_code
    if isinstance(exc, PlannerError) and exc.exit_code != 70:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    where = cache_dir() / "last-error.txt"
    text = "".join(traceback.format_exception(exc))
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(text)
        saved = f"traceback saved to {where}"
    except OSError:
        saved = "traceback could not be saved"
    sys.stderr.write(f"internal error (a bug in the planner): {type(exc).__name__}: {exc} ({saved}; "
                     "debug=true shows it)\n")
    if debug:
        sys.stderr.write(text)
    return 70


SIGPIPE_EXIT = 128 + 13  # what a shell reports for a writer killed by SIGPIPE (`python -m planner | head -1`)


def _stopped_by_user(exc: BaseException) -> Optional[int]:
    """The exit code of an ending the user asked for, said quietly; None for a real error.

    Ctrl-C (KeyboardInterrupt) → 130. SystemExit(130/143) comes from process.install_signal_handlers after it tore
    the server down. A closed stdout (BrokenPipeError) → 141, with stdout pointed at /dev/null so the interpreter's
    final flush cannot fail again (Python's docs, "Note on SIGPIPE" in the signal module)."""
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write("interrupted (Ctrl-C)\n")
        return 130
    if isinstance(exc, SystemExit):
        if exc.code == 1 and _stdout_is_devnull():  # rich's Console.on_broken_pipe: stdout to devnull, exit 1
            return SIGPIPE_EXIT
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if isinstance(exc, BrokenPipeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return SIGPIPE_EXIT
    return None


def _stdout_is_devnull() -> bool:
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (OSError, ValueError):
        return False


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "debug=true" in argv or "debug=True" in argv
    _setup_logging(debug)
    if "--version" in argv:  # Hydra's --version prints Hydra's; this is the planner's
        sys.stdout.write(f"planner {_version()}\n")
        return 0
    if any(a.split("=", 1)[0] in _HYDRA_FLAGS for a in argv):
        return _hydra_main(argv, debug)
    try:
        code = run(argv).code
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except BaseException as exc:  # noqa: BLE001 - the one place every error becomes an exit code
        return report(exc, debug)


# --- Hydra's own entry point: multirun sweeps, --cfg, --help ---------------------------------------------------

_SWEEP: list[Outcome] = []


def _hydra_job(cfg) -> int:
    """One job of a Hydra run/sweep: recompose from the job's overrides through the same path as a single run."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)
    try:
        outcome = run(overrides)
    except BaseException as exc:  # noqa: BLE001 - never sys.exit inside a sweep: record the code
        closest = getattr(exc, "closest", None)
        request = getattr(exc, "request", None)
        shown = (request, closest) if closest is not None and request is not None else None
        outcome = Outcome(report(exc, bool(cfg.debug)), shown)
    _SWEEP.append(outcome)
    return outcome.code


def _hydra_main(argv: list[str], debug: bool) -> int:
    import hydra

    from planner import compose, schema, usage

    argv = compose.split_plan_file(argv)
    bad = _bad_overrides(argv)
    if bad:  # before Hydra, whose own answer to `target.tpot=5` recommends `+target.tpot=5`
        return report(InputError(*bad), debug)
    schema.register_configs()
    usage.register()
    _SWEEP.clear()
    entry = hydra.main(config_path="pkg://conf", config_name="config", version_base="1.3")(_hydra_job)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "planner"] + argv
    try:
        entry()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code == 1:
            sys.stderr.write("error: Hydra could not compose the config from these overrides (its message is "
                             "above). Fix: check each group=option and key=value; `python -m planner --help` lists "
                             "the groups and their options.\n")
            return 2
        return code
    finally:
        sys.argv = saved
    if len(_SWEEP) > 1:
        from planner import present

        present.compare([o.plan for o in _SWEEP if o.plan])
    codes = [o.code for o in _SWEEP]
    return max(codes) if codes else 0


def _bad_overrides(argv: list[str]) -> list[str]:
    """Our paragraphs for the overrides among Hydra's arguments whose keys the schema does not have (or that use
    `+`/`~` where the planner cannot honour them: planner/overrides.py)."""
    from hydra._internal.utils import get_args_parser  # Hydra's own parser: which arguments are overrides

    from planner import compose

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:  # argparse's usage error: Hydra reports it
        return []
    with compose.Composer() as composer:
        return list(composer.problems(args.overrides).values())


def main_exit() -> None:
    """The `planner` console script."""
    sys.exit(main())
