"""Fill the parameters a stage was started without: ``mlflow run . -e train_albert -P variant=2``.

Each empty parameter is taken, in this order, from

1. what the user gave (``-P``; an empty value counts as not given),
2. the settings file (``tfqa.pipeline.settings``: ``parameters.<entry point>``, ``backbones.<name>``,
   ``data.<key>``),
3. the latest FINISHED upstream run in the run's own experiment, found by its ``tfqa.stage`` tag
   and matched to what is already known (the mining run that scored this training file, the
   SQuAD run on this backbone).

Every value taken from 2 or 3 is printed and tagged ``tfqa.resolved.<param>`` (the value and where
it came from). Whatever is still missing is one error listing each value with the ``-P`` or
settings key that gives it. An upstream run given by id that did not finish, or that another
stage made, is refused with its id and status.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from tfqa.core.errors import UserError
from tfqa.pipeline.settings import Settings
from tfqa.tracking.delivery import MAX_TAG_VAL_LENGTH
from tfqa.tracking.names import BACKBONE_DIR_TAG, RESOLVED_TAG_PREFIX
from tfqa.tracking.queries import experiment_name, get_run, run_experiment_id, stage_runs
from tfqa.tracking.upstream import is_run_id, require_stage, stage_of
from tfqa.training.variants import TRAINING_STAGES

# Where a stage records the inputs its run was given: MLflow's own -P params, then the stage's
# logged settings (`mine.train_data`, ...), for runs started outside `mlflow run`.
_PARAM_PREFIXES = ("", "stage.", "mine.", "squad.", "validate.", "predict.")


@dataclass(frozen=True)
class Resolution:
    param: str
    value: str
    source: str
    """Where it came from: ``/repo/tfqa.yaml: data.train`` or ``run <id> (finetune_squad, ...)``."""

    @property
    def tag(self) -> tuple[str, str]:
        text = f"{self.value} (from {self.source})"
        return f"{RESOLVED_TAG_PREFIX}{self.param}", text[:MAX_TAG_VAL_LENGTH]

    def line(self) -> str:
        return f"resolved {self.param} = {self.value}  (from {self.source})"


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b) if a and b else a == b


def _run_param(run, name: str) -> str | None:
    for prefix in _PARAM_PREFIXES:
        value = run.data.params.get(prefix + name)
        if value not in (None, ""):
            return value
    return None


def check_upstream_run(run_id: str, stages: Collection[str], what: str, param: str):
    """The run ``run_id`` as an input ``param`` of this stage: it must exist, be FINISHED and be
    a run of one of ``stages``; otherwise a refusal naming its id and status."""
    from mlflow.exceptions import MlflowException

    try:
        run = get_run(run_id)
    except MlflowException as exc:
        raise UserError(f"{param}: no run {run_id} in the tracking store ({exc.message})") from None
    status = run.info.status
    stage = require_stage(run, stages, what, refused_as=f": refused as {param} (status {status})")
    if status != "FINISHED":
        raise UserError(f"run {run_id} is {status}, not FINISHED: refused as {param} (a {stage} run)")
    return run


@dataclass
class _Search:
    """The outcome of looking for the latest FINISHED run of some stages."""

    run: Any = None
    skipped: list[str] = field(default_factory=list)
    """Newer runs of those stages that were not used, and why (printed)."""
    newest_other: str = ""
    """The newest FINISHED run that did not match, described (for the error when none did)."""


def latest_finished(
    experiment_id: str, stages: Collection[str], match: Mapping[str, str], exclude_run_id: str | None = None
) -> _Search:
    """The newest FINISHED run of ``stages`` in the experiment whose recorded inputs equal
    ``match`` (paths compared as real paths; an input the run did not record does not match)."""
    runs = []
    for stage in stages:
        runs += stage_runs(experiment_id, stage, max_results=200)
    runs.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    found = _Search()
    for run in runs:
        rid = run.info.run_id
        if rid == exclude_run_id:
            continue
        if run.info.status != "FINISHED":
            found.skipped.append(f"run {rid} ({stage_of(run)}) is {run.info.status}: not used")
            continue
        differs = [(k, _run_param(run, k)) for k, v in match.items() if not _same_path(_run_param(run, k) or "", v)]
        if differs:
            if not found.newest_other:
                found.newest_other = f"the newest, {rid}, has " + ", ".join(f"{k}={v}" for k, v in differs)
            continue
        found.run = run
        return found
    return found


class StageResolver:
    """One stage's parameters being filled in; see the module docstring for the order.

    ``given`` holds what the command line gave (non-empty values only). After the ``fill_*`` and
    ``upstream`` calls, :meth:`finish` raises the one error for what is missing, and
    :meth:`record` prints and tags what was resolved.
    """

    def __init__(
        self,
        entry_point: str,
        given: Mapping[str, Any],
        settings: Settings,
        *,
        experiment_id: str | None = None,
        run_id: str | None = None,
    ):
        self.entry_point = entry_point
        self.settings = settings
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.values: dict[str, Any] = {k: v for k, v in given.items() if v not in (None, "")}
        self.resolutions: list[Resolution] = []
        self.notes: list[str] = []
        self._missing: list[tuple[str, str]] = []
        note = tracking_note(settings)
        if note:
            self.notes.append(note)

    # ----------------------------------------------------------------------------- sources
    def has(self, param: str) -> bool:
        return self.values.get(param) not in (None, "")

    def _take(self, param: str, value: str, source: str) -> None:
        self.values[param] = value
        self.resolutions.append(Resolution(param, str(value), source))

    def fill_parameters(self, accepted: Collection[str]) -> None:
        """``parameters.<entry point>`` (and ``parameters.train``) for what was not given; a key
        this stage does not take is an error naming it."""
        from tfqa.core.launch import LAUNCH_OPTIONS

        launch = {o.replace("-", "_") for o in LAUNCH_OPTIONS}  # the launcher read them before the stage started
        for key, (value, settings_key) in self.settings.parameters_for(self.entry_point).items():
            if key in launch:
                continue
            if key not in accepted:
                raise UserError(f"{self.entry_point} takes no parameter {key!r}", self.settings.path, field=settings_key)
            if not self.has(key):
                _check_option_value(key, value, self.settings, settings_key)
                self._take(key, value, self.settings.source(settings_key))

    def fill_backbone(self, param: str, name: str) -> None:
        if not self.has(param) and name in self.settings.backbones:
            self._take(param, self.settings.backbones[name], self.settings.source(f"backbones.{name}"))

    def fill_data(self, param: str, key: str) -> None:
        if not self.has(param) and key in self.settings.data:
            self._take(param, self.settings.data[key], self.settings.source(f"data.{key}"))

    def upstream(self, param: str, stages: Collection[str], what: str, match: Mapping[str, str] | None = None):
        """``param`` names a run of ``stages``: check a given one, or take the latest FINISHED one
        matching ``match`` (inputs already known). Returns the run, or None when there is none."""
        match = {k: v for k, v in (match or {}).items() if v}
        if self.has(param):
            value = str(self.values[param])
            ref = value[len("runs:/") :].split("/", 1)[0] if value.startswith("runs:/") else value
            return check_upstream_run(ref, stages, what, param) if is_run_id(ref) else None
        if self.experiment_id is None:
            return None
        found = latest_finished(self.experiment_id, stages, match, exclude_run_id=self.run_id)
        experiment = self._experiment_name()
        if found.run is None:
            detail = found.newest_other or f"there is none in experiment {experiment!r}"
            detail += "".join(f"; {s}" for s in found.skipped[:3])
            on = f" with {', '.join(f'{k}={v}' for k, v in match.items())}" if match else ""
            self._missing.append(
                (param, f"-P {param}=<{what} run id>, or have a FINISHED {what} run{on} in this experiment ({detail})")
            )
            return None
        run = found.run
        self.notes += [f"{param}: newer {s}" for s in found.skipped]
        stage = stage_of(run)
        named = f" {run.info.run_name!r}" if run.info.run_name and run.info.run_name != stage else ""
        self._take(param, run.info.run_id, f"the latest FINISHED {stage} run{named} in experiment {experiment!r}")
        return run

    def fill_from_run(self, param: str, run, name: str, what: str) -> None:
        """``param`` from an input recorded on an upstream ``run`` (e.g. the mining run's train file)."""
        if self.has(param) or run is None:
            return
        value = _run_param(run, name) or (run.data.tags.get(BACKBONE_DIR_TAG) if name == "backbone" else None)
        if value:
            self._take(param, value, f"{name} of the {what} run {run.info.run_id}")

    # ---------------------------------------------------------------------------- outcome
    def need(self, param: str, how: str) -> None:
        """``param`` is required: when it is still empty, ``how`` says what gives it."""
        if not self.has(param) and all(p != param for p, _ in self._missing):
            self._missing.append((param, how))

    def finish(self) -> dict[str, Any]:
        """The values; the one error listing every missing one first."""
        missing = [(p, how) for p, how in self._missing if not self.has(p)]
        if missing:
            parts = "; ".join(f"{p}: give {how}" for p, how in missing)
            hint = self._experiment_hint()
            raise UserError(f"{self.entry_point}: missing {', '.join(p for p, _ in missing)}. {parts}{hint}")
        return dict(self.values)

    def record(self, run) -> None:
        """Print each resolution and note, and tag the run ``tfqa.resolved.<param>``."""
        import click

        for note in self.notes:
            click.echo(f"note: {note}")
        for r in self.resolutions:
            click.echo(r.line())
        if self.resolutions and run is not None:
            run.set_tags(dict(r.tag for r in self.resolutions))

    # ---------------------------------------------------------------------------- helpers
    def _experiment_name(self) -> str:
        if self.experiment_id is None:
            return "?"
        try:
            return experiment_name(self.experiment_id)
        except Exception:
            return self.experiment_id

    def _experiment_hint(self) -> str:
        wanted = self.settings.experiment
        if not wanted or self.experiment_id is None or self._experiment_name() == wanted:
            return ""
        return (
            f" (this run is in experiment {self._experiment_name()!r}; {self.settings.path} names experiment "
            f"{wanted!r}: run with --experiment-name {wanted} or export MLFLOW_EXPERIMENT_NAME={wanted})"
        )


def _check_option_value(name: str, value: str, settings: Settings, settings_key: str) -> None:
    """Refuse a settings value the command's option ``name`` cannot take (not a number, out of its
    range, not a choice), naming the settings file and key: the same conversion would otherwise
    fail later as click's ``Invalid value for '--name'``, which names neither."""
    import click

    ctx = click.get_current_context(silent=True)
    param = next((p for p in ctx.command.params if p.name == name), None) if ctx is not None else None
    if param is None or value in ("", None):
        return
    try:
        param.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        raise UserError(f"{exc.message} (the value of option {param.opts[0]})", settings.path, field=settings_key) from None


def experiment_of(run_id: str | None) -> str | None:
    """The experiment of ``run_id`` (where upstream runs are looked for); None without a run."""
    if not run_id:
        return None
    return run_experiment_id(run_id)


def tracking_note(settings: Settings) -> str | None:
    """A line when the settings name another store than the one this run is in."""
    from tfqa.pipeline.settings import same_store

    current = os.environ.get("MLFLOW_TRACKING_URI", "")
    if settings.tracking_uri and current and not same_store(current, settings.tracking_uri):
        return (
            f"this run is in {current}, {settings.path} names {settings.tracking_uri}: upstream runs are looked "
            f"for in this run's store (export MLFLOW_TRACKING_URI={settings.tracking_uri} to use that one)"
        )
    return None


# ------------------------------------------------------------------------------- the stages
def _how_backbone(r: StageResolver, param: str, name: str) -> str:
    return f"-P {param}=<backbone dir> or {r.settings.where(f'backbones.{name}')}"


def _how_data(r: StageResolver, param: str, key: str, what: str) -> str:
    return f"-P {param}=<{what}> or {r.settings.where(f'data.{key}')}"


def training_inputs(r: StageResolver, variant) -> None:
    """A training stage's backbone, data and upstream runs for ``variant`` (a ``Variant``)."""
    name = variant.backbone_name
    r.fill_backbone("backbone", name)
    r.fill_data("train_data", "train")
    r.fill_data("dev_data", "dev")
    train_data = str(r.values.get("train_data", ""))
    if is_run_id(train_data) and not os.path.exists(train_data):
        r.upstream("train_data", ["prepare"], "prepare")  # checks the given prepare run
    if variant.negatives == "hard":
        matched = {"train_data": train_data} if train_data and not is_run_id(train_data) else {}
        mined = r.upstream("mining_run", ["mine_hard_negatives"], "mine_hard_negatives", matched)
        r.fill_from_run("train_data", mined, "train_data", "mine_hard_negatives")
    if variant.init == "squad":
        squad = r.upstream("init_model", ["finetune_squad"], "finetune_squad", {"backbone": str(r.values.get("backbone", ""))})
        r.fill_from_run("backbone", squad, "backbone", "finetune_squad")
    elif r.has("init_model"):
        r.upstream("init_model", ["finetune_squad", *TRAINING_STAGES], "finetune_squad or training")
    r.need("backbone", _how_backbone(r, "backbone", name))
    r.need("train_data", _how_data(r, "train_data", "train", "NQ train file, feature cache or prepare run id"))


def squad_inputs(r: StageResolver, default_backbone_name: str) -> None:
    name = str(r.values.get("backbone_name") or default_backbone_name)
    r.fill_backbone("backbone", name)
    r.fill_data("squad_data", "squad")
    r.fill_data("squad_dev", "squad_dev")
    if r.has("init_model"):
        r.upstream("init_model", ["finetune_squad", *TRAINING_STAGES], "finetune_squad or training")
    r.need("backbone", _how_backbone(r, "backbone", name))
    r.need("squad_data", _how_data(r, "squad_data", "squad", "SQuAD 2.0 json"))


def mine_inputs(r: StageResolver) -> None:
    r.fill_data("train_data", "train")
    if r.has("model"):
        r.upstream("model", TRAINING_STAGES, "training")
    else:
        r.upstream("model", ["train_bert_base"], "train_bert_base")
    r.need("train_data", _how_data(r, "train_data", "train", "NQ train file"))


def prepare_inputs(r: StageResolver, tokenizer_backbone_name: str) -> None:
    r.fill_data("input", "train")
    r.fill_backbone("tokenizer", tokenizer_backbone_name)
    r.need("input", _how_data(r, "input", "train", "NQ file"))
    r.need("tokenizer", _how_backbone(r, "tokenizer", tokenizer_backbone_name))


def validate_inputs(r: StageResolver) -> None:
    r.fill_data("dev_data", "dev")
    r.need("dev_data", _how_data(r, "dev_data", "dev", "NQ dev file"))


def predict_inputs(r: StageResolver) -> None:
    r.fill_data("test_data", "test")
    r.upstream("validate_run", ["validate"], "validate")
    r.need("test_data", _how_data(r, "test_data", "test", "test jsonl"))
