"""Command-line plumbing shared by the entry point scripts, which import it before anything heavy.

An entry point script defines ``command()``, which imports the stage and returns its click command,
and runs ``run_entry_point(command)`` as ``__main__``: the stage's heavy imports happen only after
the script had its chance to hand itself to the prefork server."""

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

# The stage runs the code of the checkout it was started from, whatever environment runs it:
# `--env-manager uv` installs a snapshot of tfqa into an environment that is kept across code
# changes (it is keyed by the dependencies), and an editable install may point at another clone.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tfqa.core import launch  # noqa: E402
from tfqa.core.errors import RefusingCommand, UserError  # noqa: E402
from tfqa.core.progress import quiet_library_bars  # noqa: E402
from tfqa.pipeline.prefork import delegate_if_configured  # noqa: E402


def run_entry_point(command: Callable) -> None:
    """Run the click command ``command()`` returns on this process's command line."""
    # A stage's log is read in a file as often as on a terminal: library bars off where they would
    # be noise; tfqa's own progress (tfqa.core.progress) reports instead. Before the handover, so
    # that the environment the stage gets says so.
    quiet_library_bars()
    given, argv = launch.split_launch_options(normalised_argv())
    if not launch.under_launcher():
        # Several GPUs (or machines): this process becomes the launcher of the stage's ranks.
        try:
            plan = launch.plan_launch(given, _settings_nproc(argv))
            if plan.launches:
                launch.wait_for_rendezvous(plan)
        except UserError as exc:
            from tfqa.tracking import record_failure

            record_failure(exc)
            print(f"tfqa: {exc}", file=sys.stderr)
            sys.exit(1)
        if plan.launches:
            sys.exit(launch.relaunch(plan, sys.argv[0], argv))
    # Under the pipeline, the stage runs in its prefork server (libraries already imported) and this
    # process only waits for its exit status.
    delegate_if_configured()
    command()(args=argv)


def _settings_nproc(argv: list[str]) -> str:
    """``parameters.<entry point>.nproc_per_node`` of the settings file, if any (a settings file
    that does not load is the stage's to refuse, with its full message)."""
    from tfqa.pipeline.settings import Settings

    entry_point = Path(sys.argv[0]).stem
    if "--entry-point" in argv[:-1]:
        entry_point = argv[argv.index("--entry-point") + 1]
    try:
        value = Settings.load().parameters_for(entry_point).get("nproc_per_node")
    except (UserError, OSError):
        return ""
    return value[0] if value else ""


class StageCommand(RefusingCommand):
    """An entry point: a refusal is one line (tfqa.core.errors) and is recorded on the MLflow run that
    `mlflow run` made for it, also when it came before the stage re-attached to that run."""

    def on_refusal(self, exc: BaseException) -> None:
        from tfqa.tracking import record_failure

        record_failure(exc)


def normalised_argv(argv=None) -> list[str]:
    """MLflow passes undeclared `-P some_key=v` as `--some_key v`; click options use dashes."""
    out = []
    for tok in sys.argv[1:] if argv is None else argv:
        if tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            tok = "--" + name.replace("_", "-") + (eq + value if eq else "")
        out.append(tok)
    return out


def format_metrics(metrics) -> str:
    """One line of ``key=value`` pairs: readable in a log, and free of braces so that a JSON
    summary printed later stays the only JSON on stdout."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def given_options(ctx, *, skip=(), only=None) -> dict:
    """The options the command line gave a value (MLflow passes a -P left empty as ``''``)."""
    from click.core import ParameterSource

    return {
        name: value
        for name, value in ctx.params.items()
        if name not in skip
        and (only is None or name in only)
        and value not in ("", None)
        and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }


def option_values(ctx, values: dict, *, skip=(), only=None) -> dict:
    """Every option of the command (or those named in ``only``): its resolved value (converted
    to the option's type) where there is one, else what it was given, else its default (an
    empty value counts as none)."""
    out = {}
    for param in ctx.command.params:
        name = param.name
        if name not in ctx.params or name in skip or (only is not None and name not in only):
            continue
        if name in values:
            out[name] = param.type_cast_value(ctx, values[name])
        else:
            value = ctx.params[name]
            out[name] = param.get_default(ctx) if value == "" else value
    return out


def load_settings(job=None):
    """The user's settings file (tfqa.pipeline.settings), its tracking defaults applied to this
    process. Under torchrun rank 0 reads it and every rank gets rank 0's (or its refusal)."""
    from tfqa.pipeline.settings import Settings, use_tracking_defaults

    settings = job.decide(Settings.load) if job is not None else Settings.load()
    use_tracking_defaults(settings)
    return settings


def resolver(entry_point: str, ctx, settings, run=None, *, given=None, skip=()):
    """A StageResolver for this stage: what the command line gave, the settings, and the run's
    experiment for upstream runs (None: a stage that takes none resolves before its run opens)."""
    from tfqa.pipeline.resolve import StageResolver, experiment_of

    run_id = run.run_id if run is not None else None
    return StageResolver(
        entry_point,
        given_options(ctx, skip=skip) if given is None else given,
        settings,
        experiment_id=experiment_of(run_id),
        run_id=run_id,
    )


def option_names(ctx, *, skip=()) -> set:
    return {p.name for p in ctx.command.params if p.name in ctx.params and p.name not in skip}


def stage_config(ctx, options, entry_point: str, settings, run=None, inputs=None, *, given=(), accepts=()):
    """The stage's settings (``options.build``) from its command line, each value left empty
    filled from the settings file (``parameters.<entry point>``), then by ``inputs(resolver)``
    (the stage's data, backbones and upstream runs: ``tfqa.pipeline.resolve``), else the
    dataclass default; with one error for whatever stays missing, and each resolution printed
    and tagged on ``run``. Returns the config and the resolver (a stage that resolves before its
    run opens, ``run=None``, records it there itself).

    ``given`` adds to the options given on the command line (the training stages' variant
    overrides), ``accepts`` to the settings keys taken; what ``inputs`` returns are fields of
    the config the entry point fixes itself."""
    names = options.option_names
    r = resolver(entry_point, ctx, settings, run, given={**given_options(ctx, only=names), **dict(given)})
    r.fill_parameters(names | set(accepts))
    fixed = (inputs(r) if inputs is not None else None) or {}
    values = r.finish()
    if run is not None:
        r.record(run)
    return options.build(option_values(ctx, values, only=names), **fixed), r


@contextlib.contextmanager
def stage_run(
    ctx, options, entry_point: str, inputs=None, *, variant: str | None = None, given=(), accepts=(), stop_at_safe_points=False
):
    """The stage's MLflow run, named and tagged for its entry point (and variant), with its config
    resolved inside it by ``stage_config``: ``with stage_run(...) as (run, cfg):``.

    Under torchrun the job's process group is up before the run opens (rank 0 makes the run and
    every rank learns its id), rank 0 alone resolves the config and every rank gets the same one
    (or rank 0's refusal), and a stop signal is caught for the whole stage (``tfqa.core.stopping``):
    stages that check for it at safe points (training, mining) say ``stop_at_safe_points``; the
    others stop where they are. Either way the run ends KILLED."""
    from tfqa import tracking
    from tfqa.core import distributed
    from tfqa.core.stopping import graceful_stop

    job = distributed.init()
    try:
        settings = load_settings(job)
        tags = {tracking.names.STAGE_TAG: entry_point}
        if variant is not None:
            tags[tracking.names.VARIANT_TAG] = variant
        with (
            graceful_stop(at_once=not stop_at_safe_points),
            tracking.start_run(run_name=tracking.run_name(entry_point, variant), tags=tags) as run,
        ):
            cfg = job.decide(
                lambda: stage_config(ctx, options, entry_point, settings, run, inputs, given=given, accepts=accepts)[0]
            )
            yield run, cfg
    finally:
        distributed.shutdown(job)
