"""Settings files, manifests and numeric options: every refusal names its file and field (or its
option), a key given twice in YAML is refused naming both lines, numeric options refuse values
outside the range their dataclass declares, and promote/validate refuse a manifest entry that
disagrees with what is registered."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tfqa.core.bounds import OutOfRange, bounded, check_bounds
from tfqa.core.errors import UserError
from tfqa.features.cache import BuildConfig
from tfqa.inference.manifest import EnsembleManifest, ManifestEntry, ManifestError
from tfqa.pipeline.profiles import REPO
from tfqa.pipeline.settings import Settings
from tfqa.stages.options import StageOptions
from tfqa.stages.prepare import PrepareConfig
from tfqa.stages.validate import ValidateConfig

HEAD10 = Path("/work/shared/data/nq-simplified-train-head10.jsonl")
if not HEAD10.exists():
    HEAD10 = REPO.parent / "shared" / "data" / "nq-simplified-train-head10.jsonl"


def _run(script: list[str], *, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    # PYTHONPATH: ``-m tfqa.cli`` outside the checkout imports this checkout's tfqa.
    full_env = {**os.environ, "TFQA_CONFIG": "", "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run([sys.executable, *script], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tfqa: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------ YAML, encodings
def test_a_settings_key_given_twice_is_refused_naming_key_and_both_lines(tmp_path):
    path = tmp_path / "tfqa.yaml"
    path.write_text("tracking:\n  experiment: a\nparameters:\n  prepare: {workers: 1}\ntracking:\n  experiment: b\n")
    with pytest.raises(UserError) as info:
        Settings.load(path)
    assert str(info.value) == f"{path}:5: not valid YAML: key 'tracking' appears twice (lines 1 and 5) (column 1)"
    nested = tmp_path / "nested.yaml"
    nested.write_text("parameters:\n  prepare:\n    workers: 1\n    seed: 3\n    workers: 2\n")
    with pytest.raises(UserError, match=r":5: not valid YAML: key 'workers' appears twice \(lines 3 and 5\)"):
        Settings.load(nested)


def test_a_manifest_key_given_twice_is_refused_naming_key_and_both_lines(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("alias: champion\nmodels:\n  - name: a\n    variant: '1'\n    backbone: b\n    weight: 0.5\n    weight: 2\n")
    with pytest.raises(ManifestError) as info:
        EnsembleManifest.load(path)
    expected = f"{path}:7:5: not a valid ensemble manifest: invalid YAML: key 'weight' appears twice (lines 6 and 7)"
    assert str(info.value) == expected


def test_non_utf8_settings_and_manifest_files_name_file_and_line(tmp_path):
    settings = tmp_path / "tfqa.yaml"
    settings.write_bytes(b"tracking:\n  experiment: caf\xe9\n")
    with pytest.raises(UserError) as info:
        Settings.load(settings)
    assert str(info.value) == f"{settings}:2: settings file is not valid UTF-8 at byte 27 (0xe9)"
    manifest = tmp_path / "m.yaml"
    manifest.write_bytes(b"alias: champion\nmodels:\n  - {name: caf\xff, variant: '1', backbone: b}\n")
    with pytest.raises(ManifestError, match=rf"^{manifest}:3: not a valid ensemble manifest: not valid UTF-8 at byte 38"):
        EnsembleManifest.load(manifest)


def test_a_byte_order_mark_is_accepted_on_settings_and_manifests(tmp_path):
    settings = tmp_path / "tfqa.yaml"
    settings.write_bytes(b"\xef\xbb\xbftracking:\n  experiment: windows\n")
    assert Settings.load(settings).experiment == "windows"
    manifest = tmp_path / "m.yaml"
    manifest.write_bytes(b"\xef\xbb\xbf" + (REPO / "registry" / "ensemble.yaml").read_bytes())
    loaded, original = EnsembleManifest.load(manifest), EnsembleManifest.load(REPO / "registry" / "ensemble.yaml")
    assert dataclasses.replace(loaded, source="") == dataclasses.replace(original, source="")


# ------------------------------------------------------------------------------ manifest weights
@pytest.mark.parametrize(
    ("weight", "field"),
    [("-0.5", "models[1].weight"), (".nan", "models[1].weight"), (".inf", "models[1].weight"), ("-.inf", "models[1].weight")],
)
def test_a_bad_ensemble_weight_names_the_manifest_and_the_model(tmp_path, weight, field):
    path = tmp_path / "m.yaml"
    path.write_text(
        "models:\n"
        "  - {name: a, variant: '1', backbone: b, weight: 1.0}\n"
        f"  - {{name: c, variant: '2', backbone: b, weight: {weight}}}\n"
    )
    with pytest.raises(ManifestError) as info:
        EnsembleManifest.load(path)
    assert str(info.value).startswith(f"{path}: not a valid ensemble manifest: field '{field}': must be a finite number >= 0")


def test_all_zero_weights_are_refused_naming_the_manifest(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "models:\n  - {name: a, variant: '1', backbone: b, weight: 0}\n  - {name: c, variant: '2', backbone: b, weight: 0.0}\n"
    )
    with pytest.raises(ManifestError, match=rf"^{path}: not a valid ensemble manifest: field 'models': every weight is 0"):
        EnsembleManifest.load(path)


# ------------------------------------------------------------------------------ numeric ranges
def test_the_dataclass_declares_the_range_and_refuses_however_it_is_built():
    with pytest.raises(OutOfRange, match=r"field 'workers': -2 is out of range: it must be >= 0"):
        BuildConfig(workers=-2)
    with pytest.raises(OutOfRange, match=r"field 'max_bad_lines': -1 is out of range"):
        BuildConfig(max_bad_lines=-1)
    with pytest.raises(OutOfRange, match=r"field 'batch_tokens': 0 is out of range: it must be >= 1"):
        ValidateConfig(batch_tokens=0)
    assert BuildConfig(workers=0, max_bad_lines=0).workers == 0

    @dataclasses.dataclass(frozen=True)
    class Ranged:
        p: float = bounded(0.5, min=0.0, max=1.0)

        def __post_init__(self) -> None:
            check_bounds(self)

    for bad in (1.5, -0.1, float("nan"), float("inf")):
        with pytest.raises(OutOfRange, match="must be between 0.0 and 1.0"):
            Ranged(bad)


def test_stage_options_name_the_option_of_an_out_of_range_value():
    options = StageOptions(PrepareConfig, skip=("chunk_lines",), names={"scores_path": "scores"})
    with pytest.raises(UserError) as info:
        options.build({"workers": -2}, input=str(HEAD10), tokenizer="unused")
    assert str(info.value) == "option --workers: -2 is out of range: it must be >= 0"
    assert options.build({"workers": 2}, input=str(HEAD10), tokenizer="unused").build.workers == 2


@pytest.mark.parametrize(
    ("script", "args", "option"),
    [
        ("entrypoints/prepare.py", ["--workers", "-2"], "--workers"),
        ("entrypoints/prepare.py", ["--max-bad-lines", "-1"], "--max-bad-lines"),
        ("entrypoints/validate.py", ["--batch-tokens", "0"], "--batch-tokens"),
    ],
)
def test_the_entry_points_refuse_an_out_of_range_option_in_one_line(tmp_path, script, args, option):
    line = _one_line(_run([str(REPO / script), *args], cwd=tmp_path))
    assert line.startswith(f"tfqa: Invalid value for '{option}': ") and "not in the range" in line


def test_tfqa_convert_refuses_a_negative_bad_line_budget(tmp_path):
    line = _one_line(
        _run(["-m", "tfqa.cli", "convert", str(HEAD10), str(tmp_path / "x.jsonl"), "--max-bad-lines", "-1"], cwd=tmp_path)
    )
    assert line.startswith("tfqa: Invalid value for '--max-bad-lines': -1 is not in the range x>=0")


@pytest.mark.parametrize(
    ("value", "reason"),
    [("many", "'many' is not a valid integer range"), ("-2", "-2 is not in the range x>=0")],
)
def test_a_settings_value_the_option_cannot_take_names_the_settings_file_and_key(tmp_path, value, reason):
    settings = tmp_path / "tfqa.yaml"
    # max_lines: an option MLproject does not pass itself, so the settings file gives it.
    settings.write_text(f"parameters:\n  prepare:\n    max_lines: {value!r}\n")
    proc = _run(
        [str(REPO / "entrypoints" / "prepare.py"), "--input", str(HEAD10)], cwd=tmp_path, env={"TFQA_CONFIG": str(settings)}
    )
    line = _one_line(proc)
    assert line == f"tfqa: {settings}: field 'parameters.prepare.max_lines': {reason}. (the value of option --max-lines)"


# ------------------------------------------------------------------------------ registry
def _training_run(client, variant: str, backbone: str) -> str:
    import tempfile

    name = os.environ["MLFLOW_EXPERIMENT_NAME"]
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, tags={"tfqa.stage": "train_bert", "tfqa.variant": variant, "tfqa.backbone": backbone})
    lm = client.create_logged_model(exp_id, name="model", source_run_id=run.info.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "MLmodel").write_text("flavors: {}\n")
        client.log_model_artifacts(lm.model_id, tmp)
    client.finalize_logged_model(lm.model_id, "READY")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_a_manifest_that_disagrees_with_the_registered_model_is_refused_naming_both(mlflow_tracking, tmp_path):
    from mlflow.tracking import MlflowClient

    from tfqa.tracking.registry import promote, resolve_aliases

    client = MlflowClient()
    name = f"tfqa-reg-{uuid.uuid4().hex[:8]}"
    right = EnsembleManifest("champion", (ManifestEntry(name, "1", "bert-base-uncased", 1.0),), source="registry/a.yaml")
    promote(_training_run(client, "1", "bert-base-uncased"), right)
    # Another manifest says the same registered name is variant 2 on ALBERT.
    wrong = EnsembleManifest("champion", (ManifestEntry(name, "2", "albert-xxlarge-v2", 1.0),), source="registry/b.yaml")
    with pytest.raises(ManifestError) as info:
        resolve_aliases(wrong)
    assert str(info.value) == (
        f"registry/b.yaml: field 'models[0]': {name} is variant '2' on 'albert-xxlarge-v2' here, but registered model "
        f"{name!r} version 1 (@champion) is variant '1' on 'bert-base-uncased'"
    )
    with pytest.raises(ManifestError, match=rf"but registered model {name!r} is variant '1' on 'bert-base-uncased'"):
        promote(_training_run(client, "2", "albert-xxlarge-v2"), wrong)
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def test_promote_refuses_a_manifest_validate_refuses(mlflow_tracking, tmp_path):
    name = f"tfqa-refusal-{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "ensemble.yaml"
    manifest.write_text(f"models:\n  - {{name: {name}, variant: '1', backbone: tiny, weight: -0.5}}\n")
    proc = _run([str(REPO / "entrypoints" / "promote.py"), "--run-id", "0" * 32, "--manifest", str(manifest)], cwd=tmp_path)
    line = _one_line(proc)
    assert (
        line
        == f"tfqa: {manifest}: not a valid ensemble manifest: field 'models[0].weight': must be a finite number >= 0, got -0.5"
    )
