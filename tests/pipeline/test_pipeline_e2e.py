"""The whole pipeline (CI profile: tiny models) against a real mlflow server, a rerun that reuses
every step, and the MLflow UI's pages rendered by headless Chromium through scripts/docs_images.py:
the code that makes the documentation's pictures is the code checked here."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tfqa.inference.manifest import EnsembleManifest
from tfqa.pipeline.profiles import ci_profile
from tfqa.pipeline.steps import build_steps

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MANIFEST = EnsembleManifest.load(REPO / "registry" / "demo.yaml")
EXPERIMENT = "tfqa-pipeline-e2e"


def _docs_images():
    spec = importlib.util.spec_from_file_location("docs_images", REPO / "scripts" / "docs_images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


DOCS = _docs_images()


def _demo(work: Path, uri: str) -> tuple[subprocess.CompletedProcess, float]:
    # `mlflow run --env-manager local` runs entry points with the `python` on PATH: this one.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MLFLOW_RUN_ID", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tfqa.pipeline.demo", "--profile", "ci", "--work-dir", str(work), "--experiment", EXPERIMENT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def pipeline(mlflow_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    proc, seconds = _demo(work, mlflow_server.uri)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {"work": work, "stdout": proc.stdout, "seconds": seconds, "uri": mlflow_server.uri}


def test_pipeline_runs_every_stage_and_registers_the_ensemble(pipeline, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline["uri"])
    out = pipeline["stdout"]
    # The order itself is test_pipeline_plan's; here every step the CI profile plans ran.
    planned = build_steps(ci_profile(str(pipeline["work"])), {"test": "planned with a test set"})
    for step, _, _ in planned:
        assert f"] {step}" in out, f"step {step} missing from the progress output"
    summary = json.loads((pipeline["work"] / "summary.json").read_text())
    assert "ensemble " in out and "thresholds: " in out and " long=" in out, out[-2000:]
    for key in (
        "ensemble/long-best-threshold-f1",
        "ensemble/short-best-threshold-f1",
        "threshold/long",
        "threshold/short",
        "baseline/null/long-best-threshold-f1",
        "baseline/question_overlap/long-best-threshold-f1",
    ):
        assert key in summary, key
    client = MlflowClient()
    validate = client.get_run(
        client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.`tfqa.stage` = 'validate'")[
            0
        ].info.run_id
    )
    for m in MANIFEST.models:
        mv = client.get_model_version_by_alias(m.name, MANIFEST.alias)
        run = client.get_run(mv.run_id)
        assert run.data.tags["tfqa.variant"] == m.variant and run.data.tags["tfqa.backbone"] == m.backbone
        assert validate.data.tags[f"tfqa.model_version.{m.name}"] == mv.version
        assert f"model/{m.name}/long-best-threshold-f1" in validate.data.metrics
        # The training run's final dev evaluation saw validate's 60 dev examples, decoded as validate does.
        for part in ("long", "short"):
            assert run.data.metrics[f"dev/{part}_f1"] == pytest.approx(
                validate.data.metrics[f"model/{m.name}/{part}-best-threshold-f1"], abs=1e-9
            ), (m.name, part)
    analysis = {a.path for a in client.list_artifacts(validate.info.run_id, "validation/error_analysis")}
    assert {f"validation/error_analysis/{n}" for n in ("slices.json", "ensemble_changes.csv", "agreement.png")} <= analysis
    # Every training run ends with the dev evaluation; the CI profile's eval_every=10 adds step 10.
    train_runs = client.search_runs([validate.info.experiment_id], "tags.`tfqa.stage` LIKE 'train_%'")
    assert len(train_runs) == 6
    for run in train_runs:
        # (Points linked to the run's checkpoint models repeat its own, as MLflow's log_model(step=) does.)
        steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "dev/long_f1")})
        assert steps == [10, 20], (run.data.tags["tfqa.variant"], steps)
        assert {"dev/short_f1", "dev/long_threshold", "dev/short_threshold", "dev/acc_all"} <= run.data.metrics.keys()
        assert sum(run.data.metrics[f"dev/n_{t}"] for t in ("null", "long_only", "short_span", "yes", "no")) == 60
    # Hard negatives come from the mining run, the ALBERT variants start from the SQuAD run.
    v2 = client.get_run(client.get_model_version_by_alias("tfqa-demo-v2", "champion").run_id).data.tags
    assert v2["tfqa.upstream.mine_hard_negatives"] and v2["tfqa.upstream.init"]
    assert client.get_run(v2["tfqa.upstream.init"]).data.tags["tfqa.stage"] == "finetune_squad"
    # The CI profile warm-starts like the demo: SQuAD and variants 1, 4, 5 from the bert_base run.
    squad_init = client.get_run(client.get_run(v2["tfqa.upstream.init"]).data.tags["tfqa.upstream.init"]).data.tags
    assert squad_init["tfqa.stage"] == "train_bert_base"
    v5 = client.get_run(client.get_model_version_by_alias("tfqa-demo-v5", "champion").run_id).data.tags
    assert client.get_run(v5["tfqa.upstream.init"]).data.tags["tfqa.stage"] == "train_bert_base"


def test_rerun_reuses_every_finished_step(pipeline):
    proc, seconds = _demo(pipeline["work"], pipeline["uri"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_steps = len(re.findall(r"^\[\d+/\d+\] ", proc.stdout, flags=re.M))  # "[k/N] step" progress lines
    assert n_steps >= 14 and proc.stdout.count("reusing finished run") == n_steps, proc.stdout[-2000:]
    assert f"({n_steps}/{n_steps} steps reused)" in proc.stdout
    print(f"first run {pipeline['seconds']:.0f}s, rerun {seconds:.0f}s")


def _ui_artifacts(tmp: Path) -> Path:
    # The screenshots go to the test's tmp folder (pytest keeps the last three runs'), never into the
    # checkout; $TFQA_TEST_ARTIFACTS names a folder to keep them in instead (what CI uploads).
    root = Path(os.environ.get("TFQA_TEST_ARTIFACTS") or tmp) / "ui"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def pictures(pipeline, tmp_path_factory):
    """scripts/docs_images.py's pictures of the CI pipeline (what `python scripts/docs_images.py`
    makes of the demo), each page's DOM kept beside its picture."""
    out = _ui_artifacts(tmp_path_factory.mktemp("pictures"))
    made = DOCS.make_pictures(out, EXPERIMENT, pipeline["uri"])
    for name, page in made.pages.items():
        (out / f"{name}.html").write_text(page.shown)
    print(f"UI pictures in {out}")
    return made


def test_docs_images_makes_every_picture(pictures):
    assert set(pictures.files) == set(DOCS.UI_PICTURES) | set(DOCS.VALIDATE_PLOTS)
    for name, path in pictures.files.items():
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, (name, len(data))
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # each written whole


def _grid_rows(dom: str) -> dict[str, dict[str, str]]:
    """The runs table's cells: row index -> {column id: the cell's visible text}. The table is an
    ag-grid: each row is split over the pinned and the scrolling part, one ``role="row"`` element
    per part with the same ``row-index``, and each cell is a ``role="gridcell"`` with its ``col-id``."""
    from html.parser import HTMLParser

    rows: dict[str, dict[str, str]] = {}

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.row: str | None = None
            self.cell: tuple[str, int] | None = None  # (col-id, depth at which it opened)
            self.depth = 0
            self.text: list[str] = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag in ("br", "img", "input", "meta", "link", "hr", "wbr", "source", "path", "rect", "circle", "line", "use"):
                return
            self.depth += 1
            if a.get("role") == "row" and a.get("row-index") is not None:
                self.row = a["row-index"]
            elif a.get("role") == "gridcell" and a.get("col-id") and self.row is not None:
                self.cell, self.text = (a["col-id"], self.depth), []

        def handle_endtag(self, tag):
            if self.cell is not None and self.depth == self.cell[1]:
                rows.setdefault(self.row, {})[self.cell[0]] = " ".join("".join(self.text).split())
                self.cell = None
            self.depth -= 1

        def handle_data(self, data):
            if self.cell is not None:
                self.text.append(data)

    Cells().feed(dom)
    return rows


def _shows(cell: str, value: float) -> bool:
    """Whether a cell's text is ``value`` to the decimals it prints (at least two; MLflow 3.17 prints
    a metric's every digit, ``0.0625``, ``0.14893617021276595``)."""
    m = re.fullmatch(r"-?\d+\.(\d+)", cell.strip())
    return bool(m) and len(m[1]) >= 2 and abs(float(cell) - value) <= 0.5 * 10 ** -len(m[1]) + 1e-12


def _text(dom: str) -> str:
    """The DOM's visible text, tags stripped, so an assertion reads what the page shows."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)))


def test_mlflow_ui_compares_the_training_runs(pipeline, pictures):
    client = MlflowClient(pipeline["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], "tags.`tfqa.variant` != ''", max_results=20)
    train_runs = [r for r in runs if r.data.tags.get("tfqa.stage", "").startswith("train_")]
    assert len(train_runs) >= 6
    compare = pictures.pages[DOCS.COMPARE]
    shown = [r for r in train_runs if r.info.run_id in compare.shown or r.info.run_name in compare.shown]
    assert len(shown) == len(train_runs), f"compare page shows {len(shown)} of {len(train_runs)} runs"
    # As loaded, the parameters table lists every key as a row, whereas the metrics table draws only
    # the rows scrolled into view; a bare "lr" would be found in any word like "already".
    assert "train.lr" in _text(compare.loaded), _text(compare.loaded)[:3000]
    # The picture has the plots and the parameters folded away (their content stays in the DOM),
    # the metrics open.
    for section, state in (("Visualizations", "expand"), ("Parameters", "expand"), ("Metrics", "collapse")):
        assert f'aria-label="{state} {section}"' in compare.shown, section
    assert "dev/long_f1" in _text(compare.shown)


def test_mlflow_ui_shows_named_nested_runs_logged_models_and_the_registry(pipeline, pictures):
    client = MlflowClient(pipeline["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    eid = exp.experiment_id
    # The pipeline that ran every stage: a rerun's parent (test_rerun_reuses_every_finished_step
    # may have run first) holds only "(reused)" runs, which carry no tfqa.stage tag.
    for parent in client.search_runs([eid], "attributes.run_name = 'pipeline-ci'", order_by=["attributes.start_time ASC"]):
        children = client.search_runs([eid], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=100)
        train = [r for r in children if r.data.tags.get("tfqa.stage", "").startswith("train_")]
        if train:
            break
    assert len(train) == 6 and any(r.info.run_name == "validate" for r in children)
    v2 = next(r for r in train if r.info.run_name == "train_albert-v2")

    # The runs table (scripts/docs_images.py's runs-table.png): its columns reach the UI as a shared
    # view, the experiment tag `mlflow.sharedViewState.<key>` (what the UI's Share button writes) named
    # by `?viewStateShareKey=<key>`. Sorted by creation time the table nests child runs under their
    # parent, folded (the UI keeps `runsExpanded` out of shared views) until the parent's expander is
    # clicked; then every stage's row shows its dev/long_f1.
    table = pictures.pages[DOCS.RUNS_TABLE]
    top = _text(table.loaded)
    assert "pipeline-ci" in top and "train_albert-v2" not in top, top[:3000]  # children folded under the parent
    stages_dom = table.shown
    stages = _text(stages_dom)
    assert "dev/long_f1" in stages, stages[:3000]
    for r in [*train, next(r for r in children if r.info.run_name == "validate")]:
        assert r.info.run_name in stages, (r.info.run_name, stages[:3000])
    # v2's own row shows its dev/long_f1 in that column, to the digits the UI prints.
    rows = _grid_rows(stages_dom)
    # A run name cell starts with the run's colour swatch ("#445461train_albert-v2").
    found = [r for r in rows.values() if re.sub(r"^#[0-9a-f]{6}", "", r.get("attributes.`Run Name`", "")) == "train_albert-v2"]
    assert len(found) == 1, (len(found), rows)
    shown = [text for col, text in found[0].items() if "dev/long_f1" in col]
    assert len(shown) == 1, found[0]
    shown, v2_row = shown[0], found[0]
    assert _shows(shown, v2.data.metrics["dev/long_f1"]), (shown, v2.data.metrics["dev/long_f1"], v2_row)
    # The child run's own page names its parent.
    url = f"{pipeline['uri']}/#/experiments/{eid}/runs/{v2.info.run_id}"
    with DOCS.Browser() as browser:
        png = pictures.files[DOCS.RUNS_TABLE].parent / "run-train_albert-v2.png"
        run_page = DOCS.render(browser, url, png, ready="document.body.innerText.includes('Parent run')")
    run_page = _text(run_page.shown)
    assert "Parent run" in run_page and "pipeline-ci" in run_page, run_page[:3000]

    models = _text(pictures.pages[DOCS.LOGGED_MODELS].shown)
    # The Logged Models tab lists each model with its source run and registry version; its metric
    # columns are hidden until chosen in the Columns menu (not in the URL), so the metrics the UI
    # offers there are checked on the models themselves.
    logged = client.search_logged_models([eid])
    finals = [m for m in logged if m.name == "model"]
    assert len(finals) == 7
    # Each evaluated training run also keeps its best evaluated checkpoints (keep_best_models=2).
    checkpoints = [m for m in logged if m.name == "checkpoint"]
    assert checkpoints and all(sum(c.source_run_id == r.info.run_id for c in checkpoints) <= 2 for r in train)
    by_run = {m.source_run_id: m for m in finals}
    for r in train:
        assert r.info.run_name in models, (r.info.run_name, models[:3000])
        assert "dev/long_f1" in {x.key for x in by_run[r.info.run_id].metrics}, r.info.run_name
    for m in MANIFEST.models:
        mv = client.get_model_version_by_alias(m.name, MANIFEST.alias)
        shown = f"{client.get_run(mv.run_id).info.run_name} {m.name} v{mv.version}"
        assert shown in models, (shown, models[:3000])

    registry = _text(pictures.pages[DOCS.REGISTRY].shown)
    for m in MANIFEST.models:
        assert m.name in registry, (m.name, registry[:3000])
    assert registry.count(MANIFEST.alias) >= len(MANIFEST.models), registry[:3000]
