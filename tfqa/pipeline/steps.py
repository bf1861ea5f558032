"""The whole original pipeline as MLflow runs, reusing every step that already finished.

prepare -> train_bert_base -> mine_hard_negatives -> train_bert (1); finetune_squad ->
train_albert (2, 3); train_bert_large (4, 5); promote x5 -> validate -> predict.

Each step is ``mlflow.projects.run`` of an entry point. Before launching one, the pipeline looks
for a FINISHED run of the same entry point with the same parameters (compared as strings), the
same code version (``tfqa.code_version``: a hash of the package, entry points and MLproject)
and the same upstream run ids (they are parameters of the step, so a changed
upstream run changes the key) — MLflow's multistep example minus its stale-upstream gap.

Runs are named for their stage and variant (``train_albert-v2``, ``promote-v3``, ``validate``)
and, given a parent run, nested under it (``mlflow.parentRunId``); a reused step appears under
the new parent as a small ``<name> (reused)`` run pointing at the run it reused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tfqa.core.environment import scoped_env
from tfqa.inference.manifest import EnsembleManifest
from tfqa.pipeline.profiles import REPO, Profile
from tfqa.training.variants import VARIANTS


@dataclass
class StepResult:
    name: str
    run_id: str
    reused: bool
    seconds: float


class StepFailed(RuntimeError):
    """A step's run ended FAILED: names the step, its run and the error the run recorded."""

    def __init__(self, step: str, entry_point: str, run_id: str | None, error: str):
        self.step, self.entry_point, self.run_id, self.error = step, entry_point, run_id, error
        where = f"run {run_id}" if run_id else "no run was created"
        super().__init__(
            f"step {step} ({entry_point}) failed; {where}: {error}\n"
            "The steps that finished are kept: run the same command again to go on from this one."
        )

    @classmethod
    def from_execution_error(cls, step: str, entry_point: str, exc: Exception) -> StepFailed:
        m = re.search(r"Run \(ID '([0-9a-f]{32})'\)", str(exc))
        run_id = m.group(1) if m else None
        error = str(exc)
        if run_id:
            from tfqa.tracking.names import ERROR_TAG
            from tfqa.tracking.queries import run_tags

            try:  # what the stage itself recorded is more useful than "Run failed"
                error = run_tags(run_id).get(ERROR_TAG, error)
            except Exception:  # the server may be what failed: keep MLflow's message
                pass
        return cls(step, entry_point, run_id, error)


@dataclass
class PipelineResult:
    steps: list[StepResult] = field(default_factory=list)

    def run_id(self, name: str) -> str:
        return next(s.run_id for s in self.steps if s.name == name)


def _parent_for_stages(parent_run_id: str | None):
    """Name the parent run to the stage process ``mlflow run`` is about to start (it inherits
    this environment), for this launch only."""
    from tfqa.tracking import PARENT_RUN_ENV

    return scoped_env(PARENT_RUN_ENV, parent_run_id or None)


def step_run_name(step: str, entry_point: str) -> str:
    """``train_2`` -> ``train_albert-v2``, ``promote_3`` -> ``promote-v3``, ``validate`` -> ``validate``."""
    from tfqa.tracking import run_name

    prefix, _, variant = step.partition("_")
    if prefix in ("train", "promote") and (variant in VARIANTS):
        return run_name(entry_point, variant)
    return run_name(entry_point)


def run_step(
    name: str,
    entry_point: str,
    params: dict[str, str],
    *,
    experiment: str,
    code_version: str,
    log: Callable[[str], None],
    force: bool = False,
    before_launch: Callable[[], None] = lambda: None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> StepResult:
    import mlflow.projects
    from mlflow.exceptions import ExecutionException

    from tfqa.tracking.names import PARENT_RUN_TAG
    from tfqa.tracking.queries import set_run_tag
    from tfqa.tracking.reuse import find_finished_run, record_reuse

    params = {k: str(v) for k, v in params.items()}
    run_name = run_name or step_run_name(name, entry_point)
    t0 = time.perf_counter()
    if not force:
        found = find_finished_run(experiment=experiment, entry_point=entry_point, params=params, code_version=code_version)
        if found is not None:
            log(f"  {name}: reusing finished run {found}")
            if parent_run_id:
                record_reuse(found, parent_run_id, run_name, name)
            return StepResult(name, found, True, time.perf_counter() - t0)
    before_launch()
    log(f"  {name}: running {entry_point} as run {run_name} ...")
    run_id = None
    try:
        with _parent_for_stages(parent_run_id):
            submitted = mlflow.projects.run(
                str(REPO),
                entry_point=entry_point,
                parameters=params,
                env_manager="local",
                experiment_name=experiment,
                run_name=run_name,
                synchronous=True,
            )
        run_id = submitted.run_id
    except ExecutionException as e:
        failed = StepFailed.from_execution_error(name, entry_point, e)
        run_id = failed.run_id
        raise failed from None
    finally:
        if parent_run_id and run_id:
            # The stage nests itself when it starts; a stage refused before that is nested here.
            try:
                set_run_tag(run_id, PARENT_RUN_TAG, parent_run_id)
            except Exception:  # the server may be what failed: the step's own outcome matters more
                pass
    seconds = time.perf_counter() - t0
    log(f"  {name}: finished run {run_id} in {seconds:.0f}s")
    return StepResult(name, run_id, False, seconds)


def build_steps(profile: Profile, data: dict[str, str]) -> list[tuple[str, str, Callable[[PipelineResult], dict]]]:
    """(step name, entry point, params given the results so far) in execution order."""
    from tfqa.stages.validate import manifest_digest

    manifest = EnsembleManifest.load(profile.manifest)
    work = Path(profile.work_dir).resolve()
    common = {"output_dir": str(work / "outputs")}
    # The manifest names the procedure: the tag tokens every model is trained with, and how
    # each model's own outputs are decoded (as the ensemble's are).
    procedure = {"html_tokens": manifest.html_tokens}
    decode = {"decode": manifest.decode.decode}
    name_override = {"backbone_name": profile.backbone_name} if profile.backbone_name else {}

    def train(variant: str, extra: Callable[[PipelineResult], dict] = lambda r: {}):
        v = VARIANTS[variant]

        def params(r: PipelineResult) -> dict:
            mined = {"mining_run": r.run_id("mine_hard_negatives")} if v.negatives == "hard" else {}
            return {
                "backbone": profile.backbones[v.entry_point],
                "train_data": data["train"],
                **({"variant": variant} if variant != "bert_base" else {}),
                "dev_data": data["dev"],
                **common,
                **procedure,
                **decode,
                **profile.train_overrides,
                **name_override,
                **mined,
                **extra(r),
            }

        return (f"train_{variant}", v.entry_point, params)

    def squad_init(r):
        return {"init_model": r.run_id("finetune_squad")}

    warm = (lambda r: {"init_model": r.run_id("train_bert_base")}) if profile.warm_start else (lambda r: {})
    base = VARIANTS["bert_base"]
    steps = [
        (
            "prepare",
            "prepare",
            lambda r: {
                "input": data["train"],
                "tokenizer": profile.backbones["train_bert_base"],
                "cache_dir": str(work / "outputs" / "features"),
                "strategy": base.negatives,
                "negatives": base.negatives_per_example,
                "seed": base.seed,
                "max_seq_len": profile.train_overrides.get("max_seq_len", base.max_seq_len),
                **procedure,
            },
        ),
        train("bert_base", lambda r: {"train_data": r.run_id("prepare")}),
        (
            "mine_hard_negatives",
            "mine_hard_negatives",
            lambda r: {"model": r.run_id("train_bert_base"), "train_data": data["train"], **common, **profile.mine_overrides},
        ),
        train("1", warm),
        (
            "finetune_squad",
            "finetune_squad",
            lambda r: {
                "backbone": profile.backbones["finetune_squad"],
                "squad_data": data["squad"],
                **common,
                **procedure,
                **profile.squad_overrides,
                **warm(r),
            },
        ),
        train("2", squad_init),
        train("3", squad_init),
        train("4", warm),
        train("5", warm),
    ]
    steps = [
        (name, ep, (lambda r, make=make, name=name: {**make(r), **profile.step_overrides.get(name, {})}))
        for name, ep, make in steps
    ]
    for m in manifest.models:
        steps.append(
            (
                f"promote_{m.variant}",
                "promote",
                lambda r, m=m: {"run_id": r.run_id(f"train_{m.variant}"), "manifest": profile.manifest},
            )
        )
    steps.append(
        (
            "validate",
            "validate",
            lambda r: {
                "manifest": profile.manifest,
                "dev_data": data["dev"],
                **common,
                **profile.validate_overrides,
                # The promotions are upstream: a new model version must not reuse an old validation; nor
                # may new weights in the manifest (its path alone would not change).
                "promotions": ",".join(r.run_id(f"promote_{m.variant}") for m in manifest.models),
                "manifest_digest": manifest_digest(profile.manifest),
            },
        )
    )
    if data.get("test"):
        steps.append(
            ("predict", "predict", lambda r: {"validate_run": r.run_id("validate"), "test_data": data["test"], **common})
        )
    return steps


def run_pipeline(
    profile: Profile,
    data: dict[str, str],
    *,
    experiment: str = "tfqa",
    log: Callable[[str], None] = print,
    prefork: bool = True,
    parent_run_id: str | None = None,
) -> PipelineResult:
    """Every step in order, each nested under ``parent_run_id`` when given. With ``prefork`` the
    stages MLflow launches start inside a server that imported torch, transformers and MLflow
    once (``tfqa.pipeline.prefork``), started when the first step that is not reused is about to run."""
    from contextlib import ExitStack

    from tfqa.pipeline import prefork as pf
    from tfqa.tracking import code_version

    version = code_version()
    result = PipelineResult()
    steps = build_steps(profile, data)
    with ExitStack() as stack:
        server_started = False

        def start_server() -> None:
            nonlocal server_started
            if prefork and not server_started:
                stack.enter_context(pf.server())
                server_started = True

        for i, (name, entry_point, params) in enumerate(steps, 1):
            log(f"[{i}/{len(steps)}] {name}")
            result.steps.append(
                run_step(
                    name,
                    entry_point,
                    params(result),
                    experiment=experiment,
                    code_version=version,
                    log=log,
                    before_launch=start_server,
                    parent_run_id=parent_run_id,
                )
            )
    return result
