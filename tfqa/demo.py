"""The embedded default: ``python -m tfqa.demo`` runs the whole pipeline on generated NQ-like data
with the MiniLM backbone from PyPI, against a local MLflow store in ``demo/`` (or whatever
``MLFLOW_TRACKING_URI`` names), and prints the ensemble's scores beside single models and
baselines. ``--profile ci`` is the same with tiny models, for CI."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import click

from tfqa.errors import RefusingCommand
from tfqa.profiles import BACKBONE_STAGES, PROFILES, Profile


def generate_data(profile: Profile) -> dict[str, str]:
    """Write the profile's generated train/dev/test files (once; they are deterministic)."""
    from tfqa.synth import SynthConfig, write_original, write_simplified

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
        "dev": (data_dir / "dev.jsonl.gz", lambda p: write_original(p, cfg(s["n_dev"], s["seed"] + 1, n_annotations=5), compress=True)),
        "test": (data_dir / "test.jsonl", lambda p: write_simplified(p, cfg(s["n_test"], s["seed"] + 2), with_annotations=False)),
    }
    out = {}
    for key, (path, write) in files.items():
        if not path.exists():
            tmp = path.with_name(path.name + ".part")
            write(tmp)
            os.replace(tmp, path)
        out[key] = str(path)
    squad = Path(profile.squad_data)
    if not squad.exists():
        raise click.ClickException(f"SQuAD 2.0 sample not found at {squad} (set TFQA_SQUAD_DATA to its path)")
    out["squad"] = str(squad)
    return out


def tiny_backbone(work_dir: Path) -> str:
    """A 2-layer BERT on the MiniLM vocabulary, random-initialised: the CI profile's backbone."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tfqa.profiles import minilm_dir

    path = work_dir / "tiny-bert"
    if not (path / "config.json").exists():
        import torch

        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(minilm_dir())
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=512)
        BertModel(cfg).save_pretrained(str(path))
        tok.save_pretrained(str(path))
    return str(path)


@click.command(cls=RefusingCommand)
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)), default="demo", show_default=True)
@click.option("--work-dir", default=None, help="Default: demo/ (demo-ci/ for the ci profile).")
@click.option("--experiment", default="tfqa-demo", show_default=True)
@click.option("--manifest", default=None,
              help="Ensemble manifest (default: the profile's); registry/demo-original.yaml runs the 1st place's procedure.")
@click.option("--prefork/--no-prefork", default=True, show_default=True,
              help="Start stages in a server that imported torch/transformers/MLflow once (tfqa.prefork).")
def main(profile_name: str, work_dir: str | None, experiment: str, manifest: str | None, prefork: bool) -> None:
    t0 = time.perf_counter()
    profile = PROFILES[profile_name](work_dir) if work_dir else PROFILES[profile_name]()
    if manifest:
        profile = Profile(**{**profile.__dict__, "manifest": str(Path(manifest).resolve())})
    if os.environ.get("TFQA_SQUAD_DATA"):
        profile = Profile(**{**profile.__dict__, "squad_data": os.environ["TFQA_SQUAD_DATA"]})
    work = Path(profile.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    if not profile.backbones:
        b = tiny_backbone(work)
        profile = Profile(**{**profile.__dict__, "backbones": dict.fromkeys(BACKBONE_STAGES, b)})
    click.echo(f"tfqa demo ({profile.name}): tracking {os.environ['MLFLOW_TRACKING_URI']}, work dir {work}")
    click.echo("[0] generating data")
    data = generate_data(profile)

    from tfqa.pipeline import StepFailed, run_pipeline

    try:
        result = run_pipeline(profile, data, experiment=experiment, log=click.echo, prefork=prefork)
    except StepFailed as e:
        raise click.ClickException(str(e)) from None
    summary = summarise(result.run_id("validate"))
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    click.echo(format_summary(summary))
    click.echo(f"pipeline finished in {time.perf_counter() - t0:.0f}s "
               f"({sum(s.reused for s in result.steps)}/{len(result.steps)} steps reused); "
               f"open the UI with: mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']}")


def summarise(validate_run_id: str) -> dict:
    from mlflow.tracking import MlflowClient

    m = MlflowClient().get_run(validate_run_id).data.metrics
    keys = sorted(k for k in m if k.startswith(("ensemble/", "baseline/", "model/", "threshold/")))
    return {k: round(m[k], 4) for k in keys}


def format_summary(summary: dict) -> str:
    """Long/short F1 of the ensemble, each model and the baselines, then the thresholds."""
    rows = [("ensemble", "ensemble/")]
    rows += [(k.split("/")[1], f"model/{k.split('/')[1]}/") for k in summary if k.startswith("model/") and k.endswith("/long-best-threshold-f1")]
    rows += [(f"baseline {k.split('/')[1]}", f"baseline/{k.split('/')[1]}/") for k in summary
             if k.startswith("baseline/") and k.endswith("/long-best-threshold-f1")]
    lines = [f"{'':28s} {'long F1':>8s} {'short F1':>8s}"]
    for label, prefix in rows:
        long, short = summary.get(prefix + "long-best-threshold-f1"), summary.get(prefix + "short-best-threshold-f1")
        lines.append(f"{label:28s} {long if long is not None else float('nan'):8.4f} "
                     f"{short if short is not None else float('nan'):8.4f}")
    thresholds = ", ".join(f"{k.split('/', 1)[1]}={v}" for k, v in summary.items() if k.startswith("threshold/"))
    lines.append(f"thresholds: {thresholds}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
