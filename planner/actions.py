"""The app's actions on a compiled plan: write it, render its artifacts, launch and verify it here, or verify a
running endpoint. planner/app.py composes the request and maps errors to exit codes; this module does the work."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from planner.errors import InputError

log = logging.getLogger("planner")


@dataclass(frozen=True)
class Outcome:
    """What one job produced: its exit code and, when a plan was made, the request and the compiled plan."""

    code: int
    plan: Optional[tuple] = None  # (Request, CompiledPlan)


def emit(req, compiled, fmt: str, saved_to: Optional[str]) -> None:
    """The product on stdout: the plan as tables, or exactly one JSON/YAML document."""
    import sys

    from planner import document, present

    if fmt in ("json", "yaml"):
        sys.stdout.write(document.dumps(document.build(req, compiled), fmt))
    else:
        present.show(req, compiled, saved_to=saved_to)


@dataclass(frozen=True)
class LaunchOptions:
    """The command's own options for render/launch/verify, read once from the composed config."""

    out: Optional[str]
    save: bool
    endpoint: Optional[str]
    num_prompts: Optional[int]
    ready_timeout_s: float
    port: Optional[int]
    sweep: bool
    force: bool
    api_key_env: Optional[str]  # the NAME of the variable holding the server's API key (never the key)
    deploy: Optional[str]  # action=render: a cluster stack (backends/deploy/) or "all"
    model_name: Optional[str]  # `model=X` given on the command line: the served name to send instead of the plan's
    quality: bool  # run the lm-eval accuracy gate (planner/quality.py)
    quality_task: Optional[str]
    quality_baseline: Optional[str]  # a stored baseline's quality.json
    log: Optional[str]  # action=preflight: the nccl-tests output to judge
    profile: Optional[str]  # profile=nsys: the server runs under Nsight Systems (planner/profile.py)
    overrides: tuple[str, ...]
    rules: tuple[tuple[str, ...], tuple[str, ...]]


def launch_options(cfg, overrides: list[str]) -> LaunchOptions:
    given_model = any(o.startswith("model=") for o in overrides)
    return LaunchOptions(out=cfg.out, save=cfg.save, endpoint=cfg.endpoint, num_prompts=cfg.num_prompts,
                         ready_timeout_s=cfg.ready_timeout_s, port=cfg.port, sweep=cfg.sweep, force=cfg.force,
                         api_key_env=cfg.api_key_env, deploy=cfg.deploy.value if cfg.deploy else None,
                         model_name=cfg.model.name if given_model else None, quality=cfg.quality,
                         quality_task=cfg.quality_task, quality_baseline=cfg.quality_baseline, log=cfg.log,
                         profile=cfg.profile.value if cfg.profile else None,
                         overrides=tuple(overrides),
                         rules=(tuple(cfg.rules.extra), tuple(cfg.rules.disable)))


def saved_plan(cfg, req, compiled) -> Outcome:
    """plan=FILE: print it, or render / launch / verify it as it is (no recompiling)."""
    action, fmt = cfg.action.value, cfg.format.value
    path = Path(cfg.plan_file)
    opts = launch_options(cfg, [])
    if action == "verify" and cfg.endpoint:
        return Outcome(_verify_endpoint(req, compiled, path, opts), (req, compiled))
    if action in ("plan", "explain"):
        emit(req, compiled, fmt, None)
        return Outcome(0, (req, compiled))
    if action not in ("render", "launch", "verify", "preflight"):
        raise InputError(f"action={action} with plan={cfg.plan_file}: a saved plan can be shown, rendered, launched, "
                         "verified or preflighted. Fix: action=plan|render|launch|verify|preflight, or drop plan=.")
    return act(action, req, compiled, Path(cfg.out) if cfg.out else path, fmt, opts)


def act(action: str, req, compiled, path: Path, fmt: str, opts: LaunchOptions) -> Outcome:
    """Write / render / launch a compiled plan; the plan file and its artifacts sit at `path`."""
    from planner import render

    if action in ("launch", "verify"):
        if opts.endpoint:
            return Outcome(_verify_endpoint(req, compiled, path, opts), (req, compiled))
        return Outcome(_launch(req, compiled, path, opts, keep_serving=action == "launch"), (req, compiled))
    if opts.deploy and action != "render":
        log.warning("deploy=%s: the stack's files are written by action=render; action=%s ignores it", opts.deploy,
                    action)
    if action == "preflight":
        return Outcome(preflight(req, compiled, opts.log), (req, compiled))
    if action == "render":
        compiled = with_preflight(render.rendered(compiled, req, opts.api_key_env, opts.profile), req)
        if opts.deploy:
            from planner.deploy import with_deployments

            compiled = with_deployments(compiled, req, opts.deploy)
        written = render.write(compiled.launch, render.artifact_dir(path))
        log.warning("rendered %d files under %s", len(written), render.artifact_dir(path))
    if opts.save or action == "render":
        _write_plan(req, compiled, path)
    emit(req, compiled, fmt, str(path) if opts.save or action == "render" else None)
    return Outcome(0, (req, compiled))


def _write_plan(req, compiled, path: Path) -> None:
    from planner import document

    try:
        document.write(document.build(req, compiled), path)
    except OSError as exc:
        raise InputError(f"out={path}: cannot write the plan file there ({exc.strerror or exc}). Fix: give a "
                         "writable path (out=plans/my-plan.yaml), or save=false to only print it.") from None


def _launch(req, compiled, path: Path, opts: LaunchOptions, keep_serving: bool) -> int:
    """Render, launch here, verify, report (planner/launch.py); re-plans with remedies on a fixable failure."""
    from planner import compose, launch, render, search
    from planner import rules as rule_engine

    if compiled.plan.disaggregation is not None:
        raise InputError(f"action={'launch' if keep_serving else 'verify'}: the plan is disaggregated "
                         f"({compiled.plan.disaggregation.summary()}): prefill and decode servers and a router, on GPUs "
                         "this machine does not have. Fix: action=render (deploy=lws or dynamo) and deploy it, then "
                         "action=verify endpoint=<router URL> plan=FILE; or plan.disaggregation=false to launch one "
                         "aggregated server here.")
    launch.check_backend_runs_here(compiled.plan.backend.value)
    compiled = render.rendered(compiled, req, opts.api_key_env, opts.profile)
    _write_plan(req, compiled, path)
    render.write(compiled.launch, render.artifact_dir(path))

    def replan(extra: list[str], base: bool = False):
        with compose.Composer() as composer:
            cfg, _ = compose.resolve(composer, extra if base else list(opts.overrides) + extra)
            new_req = compose.to_request(cfg)
        new = search.compile_plan(new_req, rule_engine.evaluate(new_req, rule_engine.load(*opts.rules)))
        return new_req, new

    gate = _gate(req, compiled, path, opts, replan) if opts.quality else None
    return launch.run(req, compiled, path, replan, keep_serving=keep_serving, num_prompts=opts.num_prompts,
                      ready_timeout_s=opts.ready_timeout_s, port=opts.port, api_key_env=opts.api_key_env, gate=gate,
                      profile=opts.profile)


def _gate(req, compiled, path: Path, opts: LaunchOptions, replan=None):
    """The accuracy gate's comparison: a stored baseline (quality_baseline=), or for a quantized plan launched here,
    the unquantized plan served and scored first (its artifacts and quality.json under <plan>-baseline/)."""
    from planner import quality

    quality.require_lm_eval()
    baseline = quality.load_baseline(opts.quality_baseline) if opts.quality_baseline else None
    if baseline is None and quality.quantizes(compiled.plan):
        if replan is None:
            raise InputError(f"quality=true with endpoint={opts.endpoint}: the plan quantizes "
                             f"({compiled.plan.quantization.value} weights, KV {compiled.plan.kv_cache_dtype.value}), "
                             "so its accuracy needs a baseline, and a running endpoint cannot serve the unquantized "
                             "model too. Fix: quality_baseline=FILE (the quality.json of a quality=true run of the "
                             "unquantized plan), or verify here without endpoint= to measure both.")
        baseline = _baseline_accuracy(path, opts, replan)
    return quality.Gate(task=opts.quality_task, baseline=baseline, max_drop=req.target.max_accuracy_drop)


def _baseline_accuracy(path: Path, opts: LaunchOptions, replan):
    """Serve the unquantized twin of the plan (same request; precision and quantization pins dropped, weights in
    the compute dtype, the unquantized checkpoint) and score it: the baseline the quantized plan is judged by."""
    from planner import launch, quality, render

    base_req, base = replan(quality.baseline_overrides(list(opts.overrides)), base=True)
    if quality.quantizes(base.plan):
        raise InputError(f"quality=true: the unquantized twin of this plan still quantizes "
                         f"({base.plan.quantization.value}, KV {base.plan.kv_cache_dtype.value}): its checkpoint is "
                         "quantized. Fix: quality_baseline=FILE (the quality.json of a quality=true run of the "
                         "unquantized model).")
    base = render.rendered(base, base_req, opts.api_key_env)
    base_path = path.with_name(f"{path.stem}-baseline{path.suffix}")
    _write_plan(base_req, base, base_path)
    outdir = render.artifact_dir(base_path)
    outdir.mkdir(parents=True, exist_ok=True)
    log.warning("quality: serving the unquantized plan first for the baseline (%s)", outdir)
    with launch.started(base_req, base, outdir, ready_timeout_s=opts.ready_timeout_s, port=opts.port,
                        api_key_env=opts.api_key_env) as serving:
        run = quality.QualityRun(base_url=serving.base, model=base.plan.served_model_name,
                                 tokenizer=base.plan.model_path, outdir=outdir, task=opts.quality_task,
                                 api_key_env=opts.api_key_env)
        acc = quality.evaluate(run)
    quality.save(acc, outdir)
    return acc


def _verify_endpoint(req, compiled, plan_file: Path, opts: LaunchOptions) -> int:
    """action=verify endpoint=URL plan=FILE: load-test a server that is already running, report, exit 0 or 5."""
    from dataclasses import replace

    from planner import loadgen, plots, present, render, verify
    from planner.endpoint import check_endpoint

    model = opts.model_name or compiled.plan.served_model_name
    spec = verify.load_spec(req, compiled, opts.endpoint, model, num_prompts=opts.num_prompts)
    spec = replace(spec, api_key_env=opts.api_key_env)
    verify.mark_started(render.artifact_dir(plan_file), plan_file.stem)  # an earlier run's results are not this one's
    gate = _gate(req, compiled, plan_file, opts) if opts.quality else None
    check_endpoint(opts.endpoint, opts.api_key_env)  # LaunchFailed (4): cannot reach, or the key is refused
    result = loadgen.run_sync(spec)
    loadgen.require_completions(result, opts.endpoint)
    report = verify.build(req, compiled, plan_file.stem, opts.endpoint, spec, result, server={})
    if gate is not None:
        from planner import quality

        report = replace(report, quality=quality.score(gate, quality.QualityRun(
            base_url=opts.endpoint, model=model, tokenizer=compiled.plan.model_path,
            outdir=render.artifact_dir(plan_file), task=opts.quality_task, api_key_env=opts.api_key_env)))
    if opts.sweep:
        base = max(result.summary().get("request_throughput") or 1.0, 0.5)
        best, points = verify.sweep(spec, req.target, [base * f for f in (0.5, 1, 1.5, 2, 3, 4)])
        report = replace(report, sweep=points)
        log.warning("rate sweep: highest goodput under the target %s",
                    f"{best.goodput:.2f} req/s at {best.request_rate:.2f} req/s" if best else "none (every rate missed)")
    outdir = render.artifact_dir(plan_file)
    path = verify.write(report, outdir)
    present.verdict(report, path, plots.write(result, report, outdir))
    return 0 if report.passed else 5


def with_preflight(compiled, req):
    """The rendered plan with preflight/nccl-tests.sh added when it communicates over several GPUs."""
    from dataclasses import replace

    from planner import nccl

    script = nccl.render(compiled.plan, req.hw, req.model.hidden_size)
    if script is None:
        return compiled
    files = {**compiled.launch.files, "preflight/nccl-tests.sh": script}
    return replace(compiled, launch=replace(compiled.launch, files=files))


def preflight(req, compiled, log_file: Optional[str]) -> int:
    """action=preflight log=FILE: nccl-tests' output against the plan's communication model; 0 when the plan's
    prediction holds with the measured curve, 5 when it breaks it."""
    from planner import nccl, present

    plan = compiled.plan
    found = nccl.groups(plan, req.hw, req.model.hidden_size)
    if not found:
        raise InputError(f"action=preflight: the plan serves on one GPU (tensor_parallel={plan.tensor_parallel}, "
                         f"pipeline_parallel={plan.pipeline_parallel}), so it has no collectives to measure.")
    if not log_file or not Path(log_file).is_file():
        raise InputError(f"action=preflight needs log=FILE, the output of preflight/nccl-tests.sh (the table "
                         f"{found[0].test} prints, or its -J JSON file){'' if not log_file else f'; {log_file} does not exist'}. "
                         "Fix: render the plan (action=render), run the script, then pass its output as log=.")
    text = Path(log_file).read_text(errors="replace")
    group = "pp-inter-node" if "sendrecv" in Path(log_file).name else found[0].name
    verdict = nccl.judge(plan, req.model, req.hw, compiled.prediction, req.target, nccl.parse(text), group)
    present.preflight(verdict)
    return 5 if verdict.breaks_prediction else 0
