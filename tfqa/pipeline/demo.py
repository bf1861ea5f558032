"""The embedded default: ``python -m tfqa.pipeline.demo`` runs the whole pipeline on generated NQ-like data
with the MiniLM backbone from PyPI and prints the ensemble's scores beside single models and
baselines. ``--profile ci`` is the same with tiny models, for CI.

Its runs go where MLflow puts any run by default, so that ``mlflow ui`` and a bare
``mlflow run . -e <stage>`` from the clone's root find them: the store ``sqlite:///mlflow.db``
in the clone's root (artifacts under ``./mlruns``) unless ``MLFLOW_TRACKING_URI`` names another,
and the experiment ``MLFLOW_EXPERIMENT_NAME`` names, else MLflow's ``Default`` one. The stage
runs are nested under one ``pipeline-<profile>`` run. At the end it writes the settings file
(``tfqa.yaml``, ``tfqa.pipeline.settings``) for its profile: backbones, data, the profile's parameters and
where its runs are.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import click

from tfqa.core.destinations import write_text_whole
from tfqa.core.environment import scoped_env
from tfqa.core.errors import RefusingCommand
from tfqa.pipeline.profiles import BACKBONE_STAGES, PROFILES, REPO, Profile


def generate_data(profile: Profile) -> dict[str, str]:
    """Write the profile's generated train/dev/test files (once; they are deterministic)."""
    from tfqa.core.destinations import written_whole
    from tfqa.data.synth import SynthConfig, write_original, write_simplified

    s = profile.synth
    # Keyed by the settings: other settings are other files, never stale ones.
    key = hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:10]
    data_dir = Path(profile.work_dir).resolve() / "data" / key
    data_dir.mkdir(parents=True, exist_ok=True)
    pages = s.get("pages", {})

    def cfg(n: int, seed: int, **extra) -> SynthConfig:
        return SynthConfig(n_examples=n, seed=seed, **pages, **extra)

    files = {
        "train": (data_dir / "train.jsonl", lambda p: write_simplified(p, cfg(s["n_train"], s["seed"]))),
        "dev": (
            data_dir / "dev.jsonl.gz",
            lambda p: write_original(p, cfg(s["n_dev"], s["seed"] + 1, n_annotations=5), compress=True),
        ),
        "test": (data_dir / "test.jsonl", lambda p: write_simplified(p, cfg(s["n_test"], s["seed"] + 2), with_annotations=False)),
    }
    out = {}
    for key, (path, write) in files.items():
        if not path.exists():
            with written_whole(path) as tmp:
                write(tmp)
        out[key] = str(path)
    squad = Path(profile.squad_data)
    if not squad.exists():
        raise click.ClickException(f"SQuAD 2.0 sample not found at {squad} (set TFQA_SQUAD_DATA to its path)")
    out["squad"] = str(squad)
    return out


def tiny_backbone(work_dir: Path, *, tokenizer_dir: str | None = None, dropout: float | None = None) -> str:
    """A 2-layer BERT (width 64), random-initialised, on the MiniLM vocabulary (or
    ``tokenizer_dir``'s): the CI profile's backbone. ``dropout`` overrides BERT's 0.1 (0 for runs
    compared across ranks, which draw from different RNG streams)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tfqa.pipeline.profiles import minilm_dir

    path = work_dir / ("tiny-bert" if dropout is None else f"tiny-bert-dropout{dropout:g}")
    if not (path / "config.json").exists():
        import torch

        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(tokenizer_dir or minilm_dir())
        drop = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        cfg = BertConfig(
            vocab_size=len(tok) if tokenizer_dir else tok.vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=512,
            **drop,
        )
        BertModel(cfg).save_pretrained(str(path))
        tok.save_pretrained(str(path))
    return str(path)


@click.command(cls=RefusingCommand)
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)), default="demo", show_default=True)
@click.option("--work-dir", default=None, help="Default: demo/ (demo-ci/ for the ci profile).")
@click.option(
    "--experiment",
    default=None,
    help="Default: $MLFLOW_EXPERIMENT_NAME, else MLflow's default experiment (where a bare `mlflow run` goes).",
)
@click.option(
    "--manifest",
    default=None,
    help="Ensemble manifest (default: the profile's); registry/demo-original.yaml runs the 1st place's procedure.",
)
@click.option(
    "--prefork/--no-prefork",
    default=True,
    show_default=True,
    help="Start stages in a server that imported torch/transformers/MLflow once (tfqa.pipeline.prefork).",
)
def main(profile_name: str, work_dir: str | None, experiment: str, manifest: str | None, prefork: bool) -> None:
    # MLflow's own default from the clone's root, spelled out so that it holds from any cwd. The
    # stages inherit it through the environment; it is put back when the demo ends, so that a
    # caller in the same process (a test, a notebook) keeps its own store.
    with scoped_env("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO / 'mlflow.db'}"):
        run_demo(profile_name, work_dir, experiment, manifest, prefork)


def run_demo(profile_name: str, work_dir: str | None, experiment: str, manifest: str | None, prefork: bool) -> None:
    t0 = time.perf_counter()
    profile = PROFILES[profile_name](work_dir) if work_dir else PROFILES[profile_name]()
    if manifest:
        profile = Profile(**{**profile.__dict__, "manifest": str(Path(manifest).resolve())})
    if os.environ.get("TFQA_SQUAD_DATA"):
        profile = Profile(**{**profile.__dict__, "squad_data": os.environ["TFQA_SQUAD_DATA"]})
    work = Path(profile.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    experiment = experiment or default_experiment()
    if not profile.backbones:
        b = tiny_backbone(work)
        profile = Profile(**{**profile.__dict__, "backbones": dict.fromkeys(BACKBONE_STAGES, b)})
    click.echo(
        f"tfqa demo ({profile.name}): tracking {os.environ['MLFLOW_TRACKING_URI']}, experiment {experiment!r}, work dir {work}"
    )
    click.echo("[0] generating data")
    data = generate_data(profile)

    from tfqa import tracking
    from tfqa.pipeline.steps import StepFailed, run_pipeline
    from tfqa.tracking.names import PIPELINE_TAG, STEP_TAG, WORK_DIR_TAG
    from tfqa.tracking.queries import run_experiment_id

    with tracking.start_run(
        experiment=experiment,
        run_name=f"pipeline-{profile.name}",
        log_system_metrics=False,
        tags={PIPELINE_TAG: profile.name, WORK_DIR_TAG: str(work)},
    ) as parent:
        try:
            result = run_pipeline(
                profile, data, experiment=experiment, log=click.echo, prefork=prefork, parent_run_id=parent.run_id
            )
        except StepFailed as e:
            raise click.ClickException(str(e)) from None
        summary = summarise(result.run_id("validate"))
        parent.log_metrics(summary)
        parent.set_tags({f"{STEP_TAG}.{s.name}": s.run_id for s in result.steps})
        write_text_whole(work / "summary.json", json.dumps(summary, indent=1) + "\n")  # whole or not at all
        click.echo(format_summary(summary))
        settings_file = write_settings(profile, data, result, experiment, work)
        experiment_id = run_experiment_id(parent.run_id)
    click.echo(
        f"pipeline finished in {time.perf_counter() - t0:.0f}s "
        f"({sum(s.reused for s in result.steps)}/{len(result.steps)} steps reused); pipeline run {parent.run_id}"
    )
    click.echo(f"settings for `mlflow run . -e <stage>`: {settings_file}")
    click.echo(f"runs: {ui_hint(os.environ['MLFLOW_TRACKING_URI'], experiment_id)}")


def default_experiment() -> str:
    """The experiment a bare ``mlflow run`` picks: the run it was handed, $MLFLOW_EXPERIMENT_NAME,
    $MLFLOW_EXPERIMENT_ID, else MLflow's default experiment ("0", "Default")."""
    from tfqa.tracking.queries import experiment_name, run_experiment_id

    if os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run . -e pipeline`: that run's experiment
        return experiment_name(run_experiment_id(os.environ["MLFLOW_RUN_ID"]))
    if os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return os.environ["MLFLOW_EXPERIMENT_NAME"]
    return experiment_name(os.environ.get("MLFLOW_EXPERIMENT_ID") or "0")


def ui_hint(uri: str, experiment_id: str) -> str:
    """How to open the experiment's runs table."""
    table = f"#/experiments/{experiment_id}/runs"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{table}"
    if uri == f"sqlite:///{REPO / 'mlflow.db'}":
        return f"`mlflow ui` from {REPO}, then http://127.0.0.1:5000/{table}"
    return f"`mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000/{table}"


DEMO_HEADER = "# Written by tfqa.pipeline.demo"
LEGACY_DEMO_HEADER = "# Written by tfqa.demo"  # what a clone's tfqa.yaml says from before the package was grouped
# Step parameters that are run ids of this pipeline or the digest of its manifest (what this run
# read: ValidateConfig.manifest_digest), or data and backbones (their own sections).
_NOT_SETTINGS = {
    "mining_run",
    "init_model",
    "model",
    "run_id",
    "validate_run",
    "promotions",
    "manifest_digest",
    "variant",
    "backbone",
    "tokenizer",
    "input",
    "train_data",
    "dev_data",
    "test_data",
    "squad_data",
}


def settings_for(profile: Profile, data: dict[str, str], result, experiment: str) -> dict:
    """The settings file that makes ``mlflow run . -e <stage>`` train as this pipeline did: its
    backbones by name, its data, and each entry point's parameters (those every step of it
    shares, less run ids, data and what MLproject fixes)."""
    from tfqa.pipeline.settings import _fixed_parameters, mlproject_parameters
    from tfqa.pipeline.steps import build_steps
    from tfqa.training.variants import VARIANTS

    declared = mlproject_parameters()
    backbones: dict[str, str] = {}
    by_entry_point: dict[str, list[dict]] = {}
    for name, entry_point, make in build_steps(profile, data):
        params = {k: _scalar(str(v)) for k, v in make(result).items()}
        if entry_point == "finetune_squad" and profile.backbone_name:
            params["backbone_name"] = profile.backbone_name  # so a bare run looks up the same backbone
        variant = name.partition("_")[2] if entry_point.startswith("train_") else "2"
        if "backbone" in params:
            backbones[params.get("backbone_name") or VARIANTS[variant].backbone_name] = params["backbone"]
        fixed = _fixed_parameters(declared, entry_point)
        by_entry_point.setdefault(entry_point, []).append(
            {k: v for k, v in params.items() if k not in _NOT_SETTINGS and k not in fixed}
        )
    parameters = {}
    for entry_point, rows in by_entry_point.items():
        shared = {k: v for k, v in rows[0].items() if all(r.get(k) == v for r in rows[1:])}
        if shared:
            parameters[entry_point] = shared
    files = {
        k: v
        for k, v in {
            "train": data.get("train"),
            "dev": data.get("dev"),
            "test": data.get("test"),
            "squad": data.get("squad"),
        }.items()
        if v
    }
    return {
        "tracking": {"uri": os.environ["MLFLOW_TRACKING_URI"], "experiment": experiment},
        "backbones": backbones,
        "data": files,
        "parameters": parameters,
    }


def _scalar(text: str):
    """A number as a number (a flag as a flag), so the written file reads as a person writes it."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def write_settings(profile: Profile, data: dict[str, str], result, experiment: str, work: Path) -> Path:
    """Write the profile's settings file where stages look for one ($TFQA_CONFIG, else tfqa.yaml
    beside MLproject), unless a file is there that the demo did not write: then into the work dir."""
    from tfqa.pipeline.settings import CONFIG_ENV, default_path, write

    named = os.environ.get(CONFIG_ENV)
    target = Path(named) if named else (default_path() if named is None else None)
    header = (
        f"{DEMO_HEADER} (profile {profile.name}); it rewrites only a file that starts with this line.\n"
        "# What `mlflow run . -e <stage>` takes for parameters left empty (see tfqa/pipeline/settings.py)."
    )
    content = settings_for(profile, data, result, experiment)
    if target is not None and (
        not target.exists() or target.read_text(errors="replace").startswith((DEMO_HEADER, LEGACY_DEMO_HEADER))
    ):
        write(target, content, header)
        return target
    own = work / "tfqa.yaml"
    write(own, content, header)
    if target is not None:
        click.echo(f"kept {target} (not written by the demo); the demo's settings are in {own} (TFQA_CONFIG={own} uses them)")
    return own


def summarise(validate_run_id: str) -> dict:
    from tfqa.tracking.queries import run_metrics

    m = run_metrics(validate_run_id)
    keys = sorted(k for k in m if k.startswith(("ensemble/", "baseline/", "model/", "threshold/")))
    return {k: round(m[k], 4) for k in keys}


def format_summary(summary: dict) -> str:
    """Long/short F1 of the ensemble, each model and the baselines, then the thresholds."""
    rows = [("ensemble", "ensemble/")]
    rows += [
        (k.split("/")[1], f"model/{k.split('/')[1]}/")
        for k in summary
        if k.startswith("model/") and k.endswith("/long-best-threshold-f1")
    ]
    rows += [
        (f"baseline {k.split('/')[1]}", f"baseline/{k.split('/')[1]}/")
        for k in summary
        if k.startswith("baseline/") and k.endswith("/long-best-threshold-f1")
    ]
    lines = [f"{'':28s} {'long F1':>8s} {'short F1':>8s}"]
    for label, prefix in rows:
        long, short = summary.get(prefix + "long-best-threshold-f1"), summary.get(prefix + "short-best-threshold-f1")
        lines.append(
            f"{label:28s} {long if long is not None else float('nan'):8.4f} {short if short is not None else float('nan'):8.4f}"
        )
    thresholds = ", ".join(f"{k.split('/', 1)[1]}={v}" for k, v in summary.items() if k.startswith("threshold/"))
    lines.append(f"thresholds: {thresholds}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
