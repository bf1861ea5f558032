"""tfqa.inference.manifest without `mlflow run`: manifest loading errors, alias resolution and the checks
``promote`` makes before it registers anything (runs made directly against the real test server)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tfqa import tracking
from tfqa.inference.manifest import EnsembleManifest, ManifestEntry
from tfqa.modeling.saved import MODEL_ARTIFACT
from tfqa.tracking.registry import promote, resolve_aliases

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str, name: str = "manifest.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _manifest(prefix: str, alias: str = "champion", backbone: str = "tiny") -> EnsembleManifest:
    return EnsembleManifest(alias, tuple(ManifestEntry(f"{prefix}-v{k}", k, backbone, 0.2) for k in "12345"))


# ------------------------------------------------------------------------------------ manifests
def test_repository_manifests_load():
    for path in sorted((REPO / "registry").glob("*.yaml")):
        m = EnsembleManifest.load(path)
        assert m.alias and len(m.models) >= 1, path
        assert len({e.name for e in m.models}) == len(m.models)
    demo = EnsembleManifest.load(REPO / "registry" / "demo.yaml")
    assert demo.alias == "champion"
    assert [e.variant for e in demo.models] == ["1", "2", "3", "4", "5"]
    assert demo.entry_for_variant("4").name == "tfqa-demo-v4"
    assert demo.entry("tfqa-demo-v2").backbone == "all-MiniLM-L6-v2"
    assert sum(e.weight for e in demo.models) == pytest.approx(1.0)


def test_manifest_defaults_and_types(tmp_path):
    path = _write(tmp_path, "models:\n  - {name: a, variant: 2, backbone: b}\n")
    m = EnsembleManifest.load(path)
    assert m.alias == "champion"  # the default alias
    assert m.models == (ManifestEntry("a", "2", "b", 1.0),)  # variant as a string, weight 1.0


@pytest.mark.parametrize(
    "text, mentions",
    [
        ("alias: champion\n", "field 'models'"),  # no models list
        ("models:\n  - {name: a, backbone: b}\n", "field 'models[0].variant': missing"),  # entry without variant
        ("models:\n  - {variant: '1', backbone: b}\n", "field 'models[0].name': missing"),  # entry without name
        ("models:\n  - {name: a, variant: '1'}\n", "field 'models[0].backbone': missing"),  # entry without backbone
        ("models:\n  - {name: a, variant: '1', backbone: b, weight: heavy}\n", "'heavy' is not a number"),
        ("- just\n- a list\n", "expected a mapping"),  # not a mapping
        ("models: [\n", "invalid YAML"),  # not YAML
        ("", "expected a mapping"),  # empty file
        ("modles: []\n", "field 'modles': unknown key"),  # a typo
    ],
)
def test_manifest_errors_name_the_file(tmp_path, text, mentions):
    path = _write(tmp_path, text, "broken-manifest.yaml")
    with pytest.raises(ValueError) as info:
        EnsembleManifest.load(path)
    msg = str(info.value)
    assert str(path) in msg and "not a valid ensemble manifest" in msg
    assert mentions in msg


def test_missing_manifest_file_named(tmp_path):
    path = tmp_path / "nowhere" / "ensemble.yaml"
    with pytest.raises(ValueError, match=re.escape(str(path))):
        EnsembleManifest.load(path)


def test_duplicate_model_names_refused(tmp_path):
    path = _write(
        tmp_path,
        "alias: champion\nmodels:\n"
        "  - {name: tfqa-x, variant: '1', backbone: b}\n"
        "  - {name: tfqa-y, variant: '2', backbone: b}\n"
        "  - {name: tfqa-x, variant: '3', backbone: b}\n",
        "dupes.yaml",
    )
    with pytest.raises(ValueError) as info:
        EnsembleManifest.load(path)
    assert str(path) in str(info.value) and "'tfqa-x' appears twice" in str(info.value)


def test_entry_lookups_explain_what_is_missing():
    m = _manifest("tfqa-t")
    with pytest.raises(LookupError, match=r"no model for variant '7'"):
        m.entry_for_variant("7")
    with pytest.raises(LookupError, match=r"no registered model named 'tfqa-other'"):
        m.entry("tfqa-other")
    assert m.entry_for_variant(3).name == "tfqa-t-v3"  # an int variant is looked up as a string


def _six(prefix: str) -> EnsembleManifest:
    """The five, plus a sixth model: variant 4's row trained again on another backbone."""
    five = _manifest(prefix)
    return EnsembleManifest(five.alias, (*five.models, ManifestEntry(f"{prefix}-v6-deberta", "4", "deberta-v3-large", 0.2)))


def test_a_sixth_model_of_a_variant_is_found_by_its_backbone_or_registered_name():
    m = _six("tfqa-t")
    assert m.entry_for_run("4", "tiny").name == "tfqa-t-v4"
    assert m.entry_for_run("4", "deberta-v3-large").name == "tfqa-t-v6-deberta"
    # The run's registered model name (-P registered_model=) decides where it names an entry of its variant.
    assert m.entry_for_run("4", "tiny", "tfqa-t-v6-deberta").name == "tfqa-t-v6-deberta"
    assert m.entry_for_run("4", "tiny", "tfqa-t-v2").name == "tfqa-t-v4"  # another variant's entry is not taken
    # No entry of that backbone: the variant's first, whose backbone check then refuses the run.
    assert m.entry_for_run("4", "electra-large").name == "tfqa-t-v4"
    with pytest.raises(LookupError, match=r"no model for variant '7'"):
        m.entry_for_run("7", "deberta-v3-large")


def test_the_six_model_example_manifest_keeps_the_five_and_adds_deberta():
    five = EnsembleManifest.load(REPO / "registry" / "ensemble.yaml")
    six = EnsembleManifest.load(REPO / "registry" / "with-deberta-v3.yaml")
    assert [(e.name, e.variant, e.backbone) for e in six.models[:5]] == [(e.name, e.variant, e.backbone) for e in five.models]
    assert (six.decode, six.html_tokens, six.cascade) == (five.decode, five.html_tokens, five.cascade)
    assert sum(e.weight for e in six.models) == pytest.approx(1.0)
    bert_large = five.entry("tfqa-v4-bert-large").backbone
    assert six.entry_for_run("4", "deberta-v3-large", "tfqa-v6-deberta-v3-large").name == "tfqa-v6-deberta-v3-large"
    assert six.entry_for_run("4", bert_large, "tfqa-v4-bert-large").name == "tfqa-v4-bert-large"


# ------------------------------------------------------------------------- runs on the server
def _run(
    client: MlflowClient,
    *,
    status: str = "FINISHED",
    variant: str | None = "1",
    backbone: str | None = "tiny",
    model: str | None = "READY",
) -> str:
    """A training-like run: its tags, optionally a LoggedModel named ``model`` with a stub
    ``MLmodel`` (left in status ``model``: READY as a finished upload leaves it, PENDING as one
    cut short), ended with ``status``."""
    name = os.environ["MLFLOW_EXPERIMENT_NAME"]
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    tags = {"tfqa.stage": "train_bert"}
    if variant is not None:
        tags["tfqa.variant"] = variant
    if backbone is not None:
        tags["tfqa.backbone"] = backbone
    run = client.create_run(exp_id, tags=tags)
    run_id = run.info.run_id
    if model:
        lm = client.create_logged_model(exp_id, name=MODEL_ARTIFACT, source_run_id=run_id)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "MLmodel").write_text("flavors: {}\n")
            client.log_model_artifacts(lm.model_id, tmp)
        if model != "PENDING":
            client.finalize_logged_model(lm.model_id, model)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


@pytest.fixture
def client(mlflow_tracking) -> MlflowClient:
    return MlflowClient()


@pytest.fixture
def prefix() -> str:
    return f"tfqa-reg-{uuid.uuid4().hex[:8]}"


def _no_versions(client: MlflowClient, name: str) -> bool:
    return not client.search_model_versions(f"name = '{name}'")


def test_promote_registers_and_moves_the_alias(client, prefix):
    m = _manifest(prefix)
    first, second = _run(client, variant="2"), _run(client, variant="2")
    p1 = promote(first, m)
    assert (p1.name, p1.version, p1.alias, p1.run_id) == (f"{prefix}-v2", "1", "champion", first)
    rm = client.get_registered_model(p1.name)
    assert rm.tags == {"tfqa.backbone": "tiny", "tfqa.variant": "2"}
    mv = client.get_model_version_by_alias(p1.name, "champion")
    # MLflow 3: the version is made from the run's LoggedModel, not from a runs:/<id>/model folder.
    (lm,) = client.search_logged_models([client.get_run(first).info.experiment_id], f"source_run_id = '{first}'")
    assert mv.version == "1" and mv.run_id == first and mv.source == f"models:/{lm.model_id}" == f"models:/{p1.model_id}"
    assert mv.tags == {"tfqa.backbone": "tiny", "tfqa.variant": "2"}

    p2 = promote(second, m)  # the registered model exists already: a new version, the alias moves
    assert p2.version == "2"
    assert client.get_model_version_by_alias(p1.name, "champion").run_id == second

    p3 = promote(first, m, name=f"{prefix}-v2", alias="challenger")  # explicit name and alias
    assert (p3.version, p3.alias) == ("3", "challenger")
    assert client.get_model_version_by_alias(p1.name, "challenger").run_id == first
    assert client.get_model_version_by_alias(p1.name, "champion").version == "2"  # untouched


@pytest.fixture(params=["server", "local"])
def any_store(request, monkeypatch, tmp_path) -> MlflowClient:
    """The session's tracking server, or a local sqlite store like the demo's ``mlflow.db``."""
    if request.param == "server":
        request.getfixturevalue("mlflow_tracking")
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"test-{uuid.uuid4().hex[:12]}")
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return MlflowClient()


def test_each_version_is_linked_once_on_its_logged_model_in_either_store(any_store, prefix):
    """The Logged Models tab's "Registered models" column reads the model's ``mlflow.modelVersions``
    tag: set by a server itself, not by a local store, so promote links it in both, once."""
    client, m = any_store, _manifest(prefix)
    run = _run(client, variant="2")
    p1, p2 = promote(run, m), promote(run, m, alias="challenger")
    (lm,) = client.search_logged_models([client.get_run(run).info.experiment_id], f"source_run_id = '{run}'")
    versions = json.loads(client.get_logged_model(lm.model_id).tags["mlflow.modelVersions"])
    assert versions == [{"name": p1.name, "version": 1}, {"name": p2.name, "version": 2}]


def test_promote_puts_a_sixth_model_under_its_own_entry(client, prefix):
    m = _six(prefix)
    p6 = promote(_run(client, variant="4", backbone="deberta-v3-large"), m)
    p4 = promote(_run(client, variant="4", backbone="tiny"), m)
    assert (p6.name, p4.name) == (f"{prefix}-v6-deberta", f"{prefix}-v4")
    assert client.get_registered_model(p6.name).tags == {"tfqa.backbone": "deberta-v3-large", "tfqa.variant": "4"}
    for k in "1235":
        promote(_run(client, variant=k), m)
    versions = resolve_aliases(m)  # what validate pulls: six models, each its own run
    assert list(versions) == [e.name for e in m.models] and versions[p6.name].run_id == p6.run_id != versions[p4.name].run_id


def test_promote_refuses_unfinished_runs(client, prefix):
    m = _manifest(prefix)
    failed = _run(client, status="FAILED")
    with pytest.raises(ValueError, match=rf"run {failed} is FAILED, not FINISHED"):
        promote(failed, m)
    running = _run(client, status="RUNNING")
    with pytest.raises(ValueError, match=rf"run {running} is RUNNING, not FINISHED"):
        promote(running, m)
    killed = _run(client, status="KILLED")
    with pytest.raises(ValueError, match="KILLED, not FINISHED"):
        promote(killed, m)
    assert _no_versions(client, f"{prefix}-v1")


def test_promote_refuses_a_failed_tracking_run(client, prefix):
    """A run that failed the way training fails: through tfqa.tracking.start_run."""
    with pytest.raises(RuntimeError):
        with tracking.start_run(log_system_metrics=False, tags={"tfqa.variant": "1", "tfqa.backbone": "tiny"}) as run:
            raise RuntimeError("out of memory")
    with pytest.raises(ValueError, match="FAILED, not FINISHED: only finished runs are promoted"):
        promote(run.run_id, _manifest(prefix))


def test_promote_refuses_another_backbone(client, prefix):
    run_id = _run(client, variant="4", backbone="bert-base-uncased")
    with pytest.raises(ValueError) as info:
        promote(run_id, _manifest(prefix))
    msg = str(info.value)
    assert run_id in msg and "'bert-base-uncased'" in msg and f"{prefix}-v4" in msg and "'tiny'" in msg
    no_tag = _run(client, variant="4", backbone=None)
    with pytest.raises(ValueError, match=r"has backbone None; .* expects 'tiny'"):
        promote(no_tag, _manifest(prefix))
    assert _no_versions(client, f"{prefix}-v4")


def test_promote_refuses_another_variant_than_the_names(client, prefix):
    run_id = _run(client, variant="3")
    with pytest.raises(ValueError) as info:
        promote(run_id, _manifest(prefix), name=f"{prefix}-v1")
    msg = str(info.value)
    assert run_id in msg and "trained variant '3'" in msg and f"{prefix}-v1 takes variant '1'" in msg
    assert _no_versions(client, f"{prefix}-v1") and _no_versions(client, f"{prefix}-v3")


def test_promote_refuses_a_variant_the_manifest_lacks(client, prefix):
    for variant in ("bert_base", None):
        run_id = _run(client, variant=variant)
        with pytest.raises(LookupError, match="the manifest has no model for variant"):
            promote(run_id, _manifest(prefix))
    with pytest.raises(LookupError, match="no registered model named 'elsewhere'"):
        promote(_run(client, variant="1"), _manifest(prefix), name="elsewhere")


def test_promote_refuses_a_run_without_a_model(client, prefix):
    run_id = _run(client, variant="5", model=None)
    with pytest.raises(ValueError, match=rf"run {run_id} logged no model \(no LoggedModel 'model' from this run\)"):
        promote(run_id, _manifest(prefix))
    for status in ("PENDING", "FAILED"):  # an upload cut short, or one that gave up
        run_id = _run(client, variant="5", model=status)
        with pytest.raises(ValueError, match=rf"run {run_id}'s model m-[0-9a-f]+ is {status}, not READY"):
            promote(run_id, _manifest(prefix))
    assert _no_versions(client, f"{prefix}-v5")


def test_resolve_aliases_names_model_and_alias(client, prefix):
    m = _manifest(prefix)
    for k in "123":
        promote(_run(client, variant=k), m)
    with pytest.raises(LookupError) as info:  # v4 and v5 were never registered
        resolve_aliases(m)
    msg = str(info.value)
    assert f"{prefix}-v4" in msg and "'champion'" in msg

    for k in "45":
        promote(_run(client, variant=k), m)
    versions = resolve_aliases(m)
    assert list(versions) == [e.name for e in m.models]
    assert all(mv.version == "1" and mv.aliases == ["champion"] for mv in versions.values())

    promote(_run(client, variant="2"), m, alias="staging")
    with pytest.raises(LookupError) as info:  # registered, but only v2 has that alias
        resolve_aliases(m, "staging")
    msg = str(info.value)
    assert f"registered model '{prefix}-v1' has no version with alias 'staging'" in msg

    other = EnsembleManifest("nightly", m.models)  # the manifest's own alias is the default
    with pytest.raises(LookupError, match=rf"'{prefix}-v1' has no version with alias 'nightly'"):
        resolve_aliases(other)


ORIGINAL_MODELS = "models:\n" + "".join(f"  - {{name: m{k}, variant: '{k}', backbone: b}}\n" for k in "12345")


def test_yaml_errors_give_line_and_column(tmp_path):
    path = _write(tmp_path, ORIGINAL_MODELS + "cascade:\n  - {model: m1, top_k: 10\n", "bad-yaml.yaml")
    with pytest.raises(ValueError) as info:
        EnsembleManifest.load(path)
    msg = str(info.value)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: not a valid ensemble manifest: invalid YAML: ", msg), msg
    assert "Mark object" not in msg and "\n" not in msg


def test_the_original_manifest_reproduces_the_original_procedure():
    m = EnsembleManifest.load(REPO / "registry" / "original.yaml")
    assert m.decode.decode == "original" and m.html_tokens == "original"
    assert [(s.model, s.top_k, s.threshold) for s in m.cascade] == [
        ("tfqa-v1-bert-base", 10, 0.2),
        ("tfqa-v4-bert-large", 4, 0.35),
    ]
    assert {e.variant: e.weight for e in m.models} == {"1": 0.0, "2": 0.3, "3": 0.3, "4": 0.2, "5": 0.2}


@pytest.mark.parametrize(
    "extra, field, reason",
    [
        (
            "cascade:\n  - {model: m9, top_k: 10, threshold: 0.2}\n",
            "cascade[0].model",
            "'m9' is not one of the manifest's models",
        ),
        ("cascade:\n  - {model: m1, top_k: 0, threshold: 0.2}\n", "cascade[0].top_k", "must be an integer >= 1, got 0"),
        (
            "cascade:\n  - {model: m1, top_k: 2, threshold: 0.2}\n  - {model: m4, top_k: 4, threshold: 1.5}\n",
            "cascade[1].threshold",
            "must be a number in [0, 1], got 1.5",
        ),
        ("cascade:\n  - {model: m1, top_k: 2}\n", "cascade[0].threshold", "missing"),
        ("cascade: all\n", "cascade", "expected a list of stages or 'none'"),
        ("decode: best\n", "decode", "decode must be one of joint, original, got 'best'"),
        ("html_tokens: html\n", "html_tokens", "must be one of tfqa, original, got 'html'"),
    ],
)
def test_cascade_decode_and_html_tokens_errors_name_file_and_field(tmp_path, extra, field, reason):
    path = _write(tmp_path, ORIGINAL_MODELS + extra, "m.yaml")
    with pytest.raises(ValueError) as info:
        EnsembleManifest.load(path)
    assert str(info.value).startswith(f"{path}: not a valid ensemble manifest: field '{field}': {reason}")


def test_cascade_none_and_defaults(tmp_path):
    m = EnsembleManifest.load(_write(tmp_path, ORIGINAL_MODELS + "cascade: none\n"))
    assert m.cascade == () and m.decode.decode == "original" and m.html_tokens == "tfqa"
