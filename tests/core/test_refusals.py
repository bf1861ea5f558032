"""Every refusal is one line, ``tfqa: <file>[:<line>]: [field '<x>': ]<reason>``, with a non-zero
exit and no traceback (unless --debug), and no command changes its input or an earlier output.

The real ``tfqa`` CLI and the real entry point scripts run as subprocesses on real files; the
MLflow-touching ones against the session's real tracking server. Three classes of refusal: a bad
file (its content), a bad path (where it is, or what it is), and misuse (a run of the wrong stage).
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tfqa.data.readers import BadInputError
from tfqa.pipeline.profiles import REPO, minilm_dir

import nq_builders as nb


# -- helpers ---------------------------------------------------------------------------------------
def tfqa(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tfqa.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def entry_point(name: str, *args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "entrypoints" / f"{name}.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def refusal(proc: subprocess.CompletedProcess, prefix: str, *, exit_code: int = 1, only: bool = True) -> str:
    """The refusal line: ``prefix`` exactly, one line, no traceback, the exit status. ``only``: it
    is all of stderr (entry points also log through MLflow and tqdm there)."""
    out = proc.stderr + proc.stdout
    assert proc.returncode == exit_code, (proc.returncode, out[-3000:])
    assert "Traceback" not in out, out[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tfqa: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    if only:
        assert proc.stderr.strip().splitlines() == lines, proc.stderr
    assert lines[0].startswith(prefix), f"{lines[0]!r} does not start with {prefix!r}"
    return lines[0]


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under ``roots``: files by bytes and mtime, links by target, folders by name."""
    out: dict[str, tuple] = {}
    for root in roots:
        for p in [root, *(root.rglob("*") if root.is_dir() and not root.is_symlink() else [])]:
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir",)
            elif p.exists():
                out[str(p)] = ("file", p.read_bytes(), p.stat().st_mtime_ns)
    return out


def original_file(path: Path, n: int = 3, seed: int = 5) -> Path:
    return nb.write_jsonl(path, nb.random_dataset(n, seed=seed))


def short_outside_long(null_long: bool = False) -> dict:
    """The sample example (long answer = candidate 0, tokens [4, 18)) with its short answer
    moved to [16, 20): past the long answer's end; or with the long answer made null."""
    obj = nb.sample_example(7, five=False)
    ann = obj["annotations"][0]
    if null_long:
        ann["long_answer"] = {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1, "candidate_index": -1}
    else:
        ann["short_answers"] = [{"start_token": 16, "end_token": 20, "start_byte": -1, "end_byte": -1}]
    return obj


def truncated(gz: Path, keep: float) -> Path:
    data = gz.read_bytes()
    out = gz.with_name("cut-" + gz.name)
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def simplified_lines(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# -- bad files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["convert", "score"])
def test_a_truncated_gzip_is_named_not_taken_for_ctrl_d(tmp_path, command):
    """gzip's EOFError used to reach click, which took it for Ctrl-D: "Aborted!" and nothing else."""
    src = truncated(original_file(tmp_path / "orig.jsonl.gz", n=12), keep=0.6)
    (tmp_path / "p.json").write_text(json.dumps({"predictions": []}))
    before = snapshot(tmp_path)
    args = (
        ["convert", src, tmp_path / "s.jsonl"]
        if command == "convert"
        else ["score", "--gold", src, "--predictions", tmp_path / "p.json"]
    )
    line = refusal(tfqa(*args), f"tfqa: {src}:")
    assert re.fullmatch(
        rf"tfqa: {re.escape(str(src))}:\d+: truncated gzip: the compressed data ends before its "
        r"end-of-stream marker; \d+ lines were read before it",
        line,
    ), line
    assert "Aborted" not in line
    assert snapshot(tmp_path) == before


def test_under_max_bad_lines_a_gzip_break_keeps_what_was_read_before_it(tmp_path):
    objs = nb.random_dataset(12, seed=8)
    src = truncated(nb.write_jsonl(tmp_path / "orig.jsonl.gz", objs), keep=0.6)
    dst = tmp_path / "s.jsonl"
    proc = tfqa("convert", src, dst, "--max-bad-lines", 1)
    assert proc.returncode == 0, proc.stderr
    kept = simplified_lines(dst)
    assert 0 < len(kept) < len(objs)
    assert kept == [nb.simplified_form(o) for o in objs[: len(kept)]]
    (skipped,) = proc.stderr.splitlines()
    assert skipped.startswith(f"skipped {src}:{len(kept) + 1}: truncated gzip")
    assert json.loads(proc.stdout) == {"lines": len(kept), "examples": len(kept), "skipped": 1}


def test_a_corrupt_gzip_is_named(tmp_path):
    src = original_file(tmp_path / "orig.jsonl.gz", n=3)
    data = bytearray(src.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the trailer: every line decompresses, the check at the end fails
    src.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    line = refusal(tfqa("convert", src, tmp_path / "s.jsonl"), f"tfqa: {src}:4: corrupt gzip data (")
    assert line.endswith("; 3 lines were read before it")
    assert snapshot(tmp_path) == before


def test_a_gzip_break_is_the_same_with_one_or_two_feature_workers(tmp_path):
    """With a pool the lines are read in its feeder thread; the break is still skipped last."""
    from tfqa.features.cache import BuildConfig, build_features

    lines = [nb.dumps(nb.simplified_form(o)) for o in nb.random_dataset(12, seed=6)]
    src = truncated(nb.write_lines(tmp_path / "t.jsonl.gz", lines, gz=True), keep=0.6)
    m1, m2 = (
        build_features(
            src, minilm_dir(), tmp_path / f"w{w}", BuildConfig(max_bad_lines=1, workers=w, chunk_lines=2), progress=False
        ).manifest
        for w in (1, 2)
    )
    assert len(m1["skipped"]) == 1 and m1["skipped"][0]["reason"].startswith("truncated gzip")
    assert (m1["skipped"], m1["lines"], m1["rows"]) == (m2["skipped"], m2["lines"], m2["rows"]) and m1["rows"] > 0
    with pytest.raises(BadInputError, match=r":\d+: truncated gzip"):
        build_features(src, minilm_dir(), tmp_path / "strict", BuildConfig(workers=2, chunk_lines=2), progress=False)
    assert list((tmp_path / "strict").iterdir()) == []  # the unfinished build is gone


def test_reader_errors_survive_a_trip_through_a_process_pool():
    err = BadInputError("f.jsonl", 3, "example_id", "duplicate of line 1")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is BadInputError and str(back) == str(err) == "f.jsonl:3: field 'example_id': duplicate of line 1"
    assert (back.path, back.line, back.field, back.reason) == ("f.jsonl", 3, "example_id", "duplicate of line 1")


@pytest.mark.parametrize(
    "null_long, field, reason",
    [
        (False, "annotations[0].short_answers[0].end_token", "20 is past the end of its long answer [4, 18)"),
        (True, "annotations[0].short_answers", "1 short answers given for a null long answer"),
    ],
)
def test_a_short_answer_outside_its_long_answer_is_refused(tmp_path, null_long, field, reason):
    src = nb.write_jsonl(tmp_path / "orig.jsonl", [nb.sample_example(1, five=False), short_outside_long(null_long)])
    before = snapshot(tmp_path)
    line = refusal(tfqa("convert", src, tmp_path / "s.jsonl"), f"tfqa: {src}:2: field '{field}': ")
    assert line == f"tfqa: {src}:2: field '{field}': {reason}"
    assert snapshot(tmp_path) == before


def test_convert_refuses_a_repeated_example_id(tmp_path):
    a, b = nb.random_dataset(2, seed=3)
    b["example_id"] = a["example_id"]
    src = nb.write_jsonl(tmp_path / "orig.jsonl", [a, b])
    before = snapshot(tmp_path)
    line = refusal(tfqa("convert", src, tmp_path / "s.jsonl"), f"tfqa: {src}:2: field 'example_id': ")
    assert line.endswith("duplicate of line 1")
    assert snapshot(tmp_path) == before
    proc = tfqa("convert", src, tmp_path / "s.jsonl", "--max-bad-lines", 1)  # written once, not twice
    assert proc.returncode == 0 and simplified_lines(tmp_path / "s.jsonl") == [nb.simplified_form(a)]


def test_invalid_json_names_the_column_once(tmp_path):
    src = nb.write_lines(tmp_path / "orig.jsonl", [b'{"example_id": 1, "question_text": "a\tb"}\n'])
    line = refusal(tfqa("convert", src, tmp_path / "s.jsonl"), f"tfqa: {src}:1: field '<json>': invalid JSON: ")
    assert line.endswith("Invalid control character at column 38") and "at at" not in line


@pytest.mark.parametrize("gz", [False, True])
def test_an_empty_input_is_refused_unless_allowed(tmp_path, gz):
    src = nb.write_lines(tmp_path / ("empty.jsonl.gz" if gz else "empty.jsonl"), [b"\n"] if not gz else [], gz=gz)
    before = snapshot(tmp_path)
    line = refusal(tfqa("convert", src, tmp_path / "s.jsonl"), f"tfqa: {src}: ")
    assert line == f"tfqa: {src}: the file is empty (no lines)"
    assert snapshot(tmp_path) == before
    proc = tfqa("convert", src, tmp_path / "s.jsonl", "--allow-empty")
    assert proc.returncode == 0 and (tmp_path / "s.jsonl").read_bytes() == b""


def test_skipped_lines_are_printed_up_to_20_then_counted(tmp_path):
    good = nb.random_dataset(2, seed=4)
    lines = [nb.dumps(good[0]), *[b"{not json\n"] * 23, nb.dumps(good[1])]
    src = nb.write_lines(tmp_path / "orig.jsonl", lines)
    proc = tfqa("convert", src, tmp_path / "s.jsonl", "--max-bad-lines", 30)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err[:20] == [
        f"skipped {src}:{n}: field '<json>': invalid JSON: Expecting property name enclosed in double quotes at column 2"
        for n in range(2, 22)
    ]
    assert err[20:] == ["... and 3 more skipped lines"]
    assert json.loads(proc.stdout) == {"lines": 25, "examples": 2, "skipped": 23}


# -- bad paths -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "hard link"])
def test_convert_never_writes_over_its_input(tmp_path, how):
    """The bug: ``tfqa convert f f`` exited 0 with f replaced by its simplified form. --force or not."""
    src = original_file(tmp_path / "orig.jsonl")
    dst = {
        "same path": src,
        "relative path": Path("./orig.jsonl"),
        "symlink": tmp_path / "link.jsonl",
        "hard link": tmp_path / "hard.jsonl",
    }[how]
    if how == "symlink":
        dst.symlink_to(src)
    elif how == "hard link":
        os.link(src, dst)
    before = snapshot(tmp_path)
    for force in ([], ["--force"]):
        line = refusal(tfqa("convert", src, dst, *force, cwd=tmp_path), f"tfqa: {dst}: is the input file itself")
        assert line.endswith(": a command never writes over its input")
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["convert", "generate"])
def test_an_existing_destination_is_replaced_only_with_force(tmp_path, command):
    src = original_file(tmp_path / "orig.jsonl")
    dst = tmp_path / "earlier.jsonl"
    dst.write_text("an earlier output\n")
    args = ["convert", src, dst] if command == "convert" else ["generate", dst, "--examples", 2]
    before = snapshot(tmp_path)
    refusal(tfqa(*args), f"tfqa: {dst}: already exists: pass --force to replace it")
    assert snapshot(tmp_path) == before
    proc = tfqa(*args, "--force")
    assert proc.returncode == 0, proc.stderr
    assert dst.read_text() != "an earlier output\n" and len(simplified_lines(dst)) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.jsonl", "orig.jsonl"]  # no temporary left


def test_convert_into_a_folder_that_does_not_exist(tmp_path):
    """It used to fail with a traceback naming the internal `.tmp` path."""
    src = original_file(tmp_path / "orig.jsonl")
    dst = tmp_path / "nope" / "s.jsonl"
    before = snapshot(tmp_path)
    line = refusal(tfqa("convert", src, dst), f"tfqa: {dst}: folder {tmp_path / 'nope'} does not exist (create it first)")
    assert ".tmp" not in line and not (tmp_path / "nope").exists()
    assert snapshot(tmp_path) == before


def test_convert_into_a_directory(tmp_path):
    src = original_file(tmp_path / "orig.jsonl")
    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path)
    refusal(tfqa("convert", src, tmp_path / "out"), f"tfqa: {tmp_path / 'out'}: is a directory: name the file to write")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("what", ["convert input", "score --gold", "score --predictions"])
@pytest.mark.parametrize("kind", ["directory", "missing"])
def test_a_directory_or_missing_file_where_a_file_belongs(tmp_path, what, kind):
    gold = original_file(tmp_path / "gold.jsonl")
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"predictions": []}))
    bad = tmp_path / "folder"
    if kind == "directory":
        bad.mkdir()
    args = {
        "convert input": ["convert", bad, tmp_path / "s.jsonl"],
        "score --gold": ["score", "--gold", bad, "--predictions", preds],
        "score --predictions": ["score", "--gold", gold, "--predictions", bad],
    }[what]
    before = snapshot(tmp_path)
    reason = "is a directory, not a file" if kind == "directory" else "no such file"
    assert refusal(tfqa(*args), f"tfqa: {bad}: ") == f"tfqa: {bad}: {reason}"
    assert snapshot(tmp_path) == before


def test_a_usage_error_is_one_line_with_exit_2(tmp_path):
    line = refusal(tfqa("convert"), "tfqa: Missing argument 'SRC'.", exit_code=2)
    assert "--help" in line


@pytest.mark.parametrize("how", ["--debug before", "--debug after", "TFQA_DEBUG=1"])
def test_debug_shows_the_traceback(tmp_path, how):
    args = {
        "--debug before": ["--debug", "convert", tmp_path, "x.jsonl"],
        "--debug after": ["convert", "--debug", tmp_path, "x.jsonl"],
        "TFQA_DEBUG=1": ["convert", tmp_path, "x.jsonl"],
    }[how]
    proc = tfqa(*args, env={"TFQA_DEBUG": "1"} if how == "TFQA_DEBUG=1" else {"TFQA_DEBUG": ""})
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith(f"UserError: {tmp_path}: is a directory, not a file")


def test_prepare_refuses_a_directory_as_its_input(tmp_path):
    """It said "input file not found"; it fails before any run is opened."""
    (tmp_path / "data").mkdir()
    before = snapshot(tmp_path)
    line = refusal(
        entry_point(
            "prepare",
            "--input",
            tmp_path / "data",
            "--tokenizer",
            minilm_dir(),
            "--cache-dir",
            tmp_path / "features",
            cwd=tmp_path,
            env={"MLFLOW_TRACKING_URI": ""},
        ),
        f"tfqa: {tmp_path / 'data'}: ",
    )
    assert line == f"tfqa: {tmp_path / 'data'}: is a directory, not a file"
    assert snapshot(tmp_path) == before


# -- prepare, through the real entry point and tracking server --------------------------------------
def _runs(stage: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    return [] if exp is None else client.search_runs([exp.experiment_id], f"tags.`tfqa.stage` = '{stage}'")


@pytest.fixture
def work(tmp_path_factory) -> Path:
    """The folder the entry points run in, apart from the test's files (so MLflow's own files,
    should it write any, are not mistaken for a change to them)."""
    return tmp_path_factory.mktemp("cwd")


def test_prepare_refuses_an_empty_input_and_marks_its_run_failed(mlflow_tracking, tmp_path, work):
    src = tmp_path / "train.jsonl"
    src.write_bytes(b"")
    cache = tmp_path / "features"
    cache.mkdir()
    (cache / "earlier-output.txt").write_text("kept\n")
    inputs = snapshot(src, cache)
    args = ["--input", src, "--tokenizer", minilm_dir(), "--cache-dir", cache, "--workers", 1]
    line = refusal(entry_point("prepare", *args, cwd=work), f"tfqa: {src}: ", only=False)
    assert line == f"tfqa: {src}: the file is empty (no lines)"
    assert snapshot(src, cache) == inputs
    (run,) = _runs("prepare")
    assert run.info.status == "FAILED" and run.data.tags["tfqa.error"] == f"UserError: {src}: the file is empty (no lines)"

    proc = entry_point("prepare", *args, "--allow-empty", "true", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("(built; 0 rows)")


@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_prepare_refuses_a_cache_dir_it_cannot_write(mlflow_tracking, tmp_path, work, kind):
    src = nb.write_jsonl(tmp_path / "train.jsonl", [nb.simplified_form(o) for o in nb.random_dataset(2, seed=1)])
    if kind == "a file":
        cache = tmp_path / "features"
        cache.write_text("not a folder\n")
        reason = "the feature cache folder is a file, not a folder"
    else:
        # No permission bits stop root, so a folder no one may create anything in: sysfs.
        cache = Path("/sys") / f"tfqa-cache-{uuid.uuid4().hex[:8]}"
        reason = "cannot write the feature cache here: "
    before = snapshot(tmp_path)
    line = refusal(
        entry_point("prepare", "--input", src, "--tokenizer", minilm_dir(), "--cache-dir", cache, "--workers", 1, cwd=work),
        f"tfqa: {cache}: {reason}",
        only=False,
    )
    if kind == "read-only":
        assert line.removeprefix(f"tfqa: {cache}: {reason}").strip()  # and the reason the OS gave
    assert snapshot(tmp_path) == before
    assert not cache.is_dir()


def test_prepare_prints_and_records_skipped_lines_and_keeps_the_lines_before_a_gzip_break(mlflow_tracking, tmp_path, work):
    good = [nb.simplified_form(o) for o in nb.random_dataset(14, seed=2)]
    bad_short = nb.simplified_form(short_outside_long())
    lines = [nb.dumps(good[0]), nb.dumps(bad_short), *[b"{not json\n"] * 20, *map(nb.dumps, good[1:])]
    src = truncated(nb.write_lines(tmp_path / "train.jsonl.gz", lines, gz=True), keep=0.6)
    before = snapshot(src)
    proc = entry_point(
        "prepare",
        "--input",
        src,
        "--tokenizer",
        minilm_dir(),
        "--cache-dir",
        tmp_path / "features",
        "--max-bad-lines",
        22,
        "--workers",
        1,
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and snapshot(src) == before
    path = Path(re.search(r"features: (\S+) \(built; (\d+) rows\)", proc.stdout).group(1))
    manifest = json.loads((path / "manifest.json").read_text())
    skipped = manifest["skipped"]
    assert len(skipped) == 22 and manifest["skipped_lines"] == 22
    assert skipped[0] == {
        "line": 2,
        "field": "annotations[0].short_answers[0].end_token",
        "reason": "20 is past the end of its long answer [4, 18)",
    }
    assert [s["field"] for s in skipped[1:21]] == ["<json>"] * 20
    assert skipped[21]["field"] is None and skipped[21]["reason"].startswith("truncated gzip")
    read = skipped[21]["line"] - 1  # the break comes after the last line read
    assert 23 < read < len(lines) and manifest["lines"] == read and manifest["counts"]["examples"] == read - 21
    printed = [line for line in proc.stderr.splitlines() if line.startswith(("skipped ", "... and"))]
    assert (
        printed[0]
        == f"skipped {src}:2: field 'annotations[0].short_answers[0].end_token': 20 is past the end of its long answer [4, 18)"
    )
    assert printed[1:20] == [
        f"skipped {src}:{n}: field '<json>': invalid JSON: Expecting property name enclosed in double quotes at column 2"
        for n in range(3, 22)
    ]
    assert printed[20:] == [f"... and 2 more skipped lines (all are in {path / 'manifest.json'})"]


# -- misuse: a run of the wrong stage --------------------------------------------------------------
def _finished_run(tags: dict) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name = os.environ["MLFLOW_EXPERIMENT_NAME"]
    exp = client.get_experiment_by_name(name)
    run = client.create_run(exp.experiment_id if exp else client.create_experiment(name), tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@pytest.mark.parametrize("stage", ["validate", "finetune_squad"])
def test_promote_refuses_a_run_that_is_not_a_training_run(mlflow_tracking, tmp_path, work, stage):
    from mlflow.tracking import MlflowClient

    name = f"tfqa-refusal-{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "ensemble.yaml"
    manifest.write_text(f"alias: champion\nmodels:\n  - {{name: {name}, variant: '1', backbone: tiny}}\n")
    run_id = _finished_run({"tfqa.stage": stage, "mlflow.project.entryPoint": stage, "tfqa.backbone": "tiny"})
    before = snapshot(tmp_path)
    proc = entry_point("promote", "--run-id", run_id, "--manifest", manifest, cwd=work)
    line = refusal(proc, f"tfqa: run {run_id} is a {stage} run (entry point {stage}), not a training run", only=False)
    assert line == f"tfqa: run {run_id} is a {stage} run (entry point {stage}), not a training run"
    assert snapshot(tmp_path) == before
    assert not MlflowClient().search_registered_models(f"name = '{name}'")
    (promote_run,) = _runs("promote")
    assert promote_run.info.status == "FAILED" and line.removeprefix("tfqa: ") in promote_run.data.tags["tfqa.error"]


def test_predict_refuses_a_run_that_is_not_a_validate_run(mlflow_tracking, tmp_path, work):
    run_id = _finished_run({"tfqa.stage": "train_bert", "mlflow.project.entryPoint": "train_bert", "tfqa.variant": "1"})
    test = nb.write_jsonl(tmp_path / "test.jsonl", [nb.simplified_form(o) for o in nb.random_dataset(2, seed=9)])
    out = tmp_path / "outputs"
    before = snapshot(test)
    proc = entry_point("predict", "--validate-run", run_id, "--test-data", test, "--output-dir", out, cwd=work)
    refusal(proc, f"tfqa: run {run_id} is a train_bert run (entry point train_bert), not a validate run", only=False)
    assert snapshot(test) == before and not out.exists()


def test_finetune_squad_names_an_empty_squad_file_before_any_model_loads(mlflow_tracking, tmp_path, work):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"version": "v2.0", "data": []}))
    before = snapshot(squad)
    # The backbone does not exist: the refusal is about the data, so nothing tried to load a model.
    proc = entry_point(
        "finetune_squad",
        "--backbone",
        tmp_path / "no-such-backbone",
        "--squad-data",
        squad,
        "--output-dir",
        tmp_path / "outputs",
        cwd=work,
    )
    line = refusal(proc, f"tfqa: {squad}: field 'data': ", only=False)
    assert line == f"tfqa: {squad}: field 'data': holds no questions"
    assert snapshot(squad) == before and not (tmp_path / "outputs").exists()


def test_under_mlflow_run_a_refusal_before_the_stage_opened_its_run_is_its_error_tag(mlflow_tracking, tmp_path, monkeypatch):
    """`mlflow run` makes the run; prepare refuses its input before re-attaching to it. The
    run still ends FAILED, and its tfqa.error tag (what the pipeline reports) is the refusal."""
    from mlflow.tracking import MlflowClient

    from tfqa.pipeline.steps import StepFailed, run_step

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    experiment = os.environ["MLFLOW_EXPERIMENT_NAME"]
    MlflowClient().create_experiment(experiment)
    (tmp_path / "data").mkdir()
    with pytest.raises(StepFailed) as info:
        run_step(
            "prepare",
            "prepare",
            {"input": tmp_path / "data", "tokenizer": minilm_dir(), "cache_dir": tmp_path / "f"},
            experiment=experiment,
            code_version="test",
            log=lambda _: None,
            force=True,
        )
    e = info.value
    assert e.run_id and MlflowClient().get_run(e.run_id).info.status == "FAILED"
    assert e.error == f"UserError: {tmp_path / 'data'}: is a directory, not a file"
