"""prepare -> train -> validate for every tokenizer family, and a byte-level BPE model ensembled
with a WordPiece one at the word level.

Each family's tiny backbone (``backbone_assets``: tokenizers trained on the real NQ lines) is
prepared on generated NQ data, trained from ``StartingPoint`` as the training stage builds its
model, saved and reloaded as a model folder, and scored on a five-way-annotated dev set with dev
features built from the tokenizer saved in that folder, as ``validate`` does; the official NQ
metric scores the outputs. Then RoBERTa's (byte-level BPE) and BERT's (WordPiece) outputs must
line up row for row and average per document word.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_PAGES, small_page_nq_files

from tfqa.data.synth import SynthConfig, write_original
from tfqa.evaluation.dev import DevSet, score_outputs
from tfqa.features.cache import BuildConfig, build_features
from tfqa.features.dataset import CandidateDataset, FeatureStore
from tfqa.features.featurize import FeatureConfig
from tfqa.features.selection import SelectionConfig
from tfqa.features.tokenization import load_tokenizer, word_prefix
from tfqa.inference import decode as dec
from tfqa.inference.batch_scoring import score_candidates
from tfqa.inference.ensemble import align, ensemble
from tfqa.modeling.loading import StartingPoint
from tfqa.modeling.model import CandidateQAModel
from tfqa.stages.prepare import PrepareConfig, run_prepare
from tfqa.training.loop import train

import backbone_assets as ba
from tiny_training import RecordingLogger, tiny_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEQ_LEN = 64
STEPS = 20
# What each family is, as docs/backbones.md's table states it.
DESCRIBED = {
    "bert": {"model_type": "bert", "token_types": "yes", "pooling": "the encoder's pooler", "attention": "sdpa"},
    "albert": {"model_type": "albert", "token_types": "yes", "pooling": "the encoder's pooler", "attention": "sdpa"},
    "roberta": {"model_type": "roberta", "token_types": "no", "pooling": "the encoder's pooler", "attention": "sdpa"},
    "deberta-v3": {
        "model_type": "deberta-v2",
        "token_types": "no",
        "pooling": "own tanh dense over the first token",
        "attention": "eager",
    },
    "modernbert": {
        "model_type": "modernbert",
        "token_types": "no",
        "pooling": "own tanh dense over the first token",
        "attention": "sdpa",
    },
}


@dataclass
class Trained:
    losses: list[float]
    steps: int
    described: dict
    fingerprints: tuple[str, str]
    """Tokenizer fingerprints of the training and the dev features."""
    word_prefixes: tuple[str, str]
    store: FeatureStore
    outputs: pd.DataFrame
    reloaded_outputs: pd.DataFrame
    metrics: dict


@dataclass
class Families:
    dev: DevSet
    runs: dict[str, Trained]


@pytest.fixture(scope="module")
def families(family_backbones, tmp_path_factory) -> Families:
    tmp = tmp_path_factory.mktemp("families_e2e")
    train_src, dev_src = small_page_nq_files(tmp, 24, 10)
    dev = DevSet.read(dev_src)
    runs = {}
    for family, backbone in family_backbones.dirs.items():
        fcfg = FeatureConfig(max_seq_len=SEQ_LEN, max_question_len=10)
        build = BuildConfig(features=fcfg, selection=SelectionConfig("random", negatives=3, seed=0), workers=1)
        info = run_prepare(PrepareConfig(str(train_src), str(backbone), str(tmp / "features"), build), progress=False)
        store = FeatureStore(info.path)
        tok = load_tokenizer(store.tokenizer_dir)
        torch.manual_seed(0)
        model = StartingPoint.of(str(backbone)).build(len(tok))
        logger = RecordingLogger()
        cfg = tiny_train_config(max_steps=STEPS, warmup_steps=3, batch_size=8, mega_batch_steps=2, progress=False, device="cpu")
        result = train(
            model, CandidateDataset(store), cfg, out_dir=tmp / family, logger=logger, resume=None, pad_id=tok.pad_token_id
        )
        # The model folder validate reads: weights, head, config and the training features' tokenizer.
        model_dir = model.save_pretrained(tmp / family / "model")
        tok.save_pretrained(str(model_dir))
        reloaded = CandidateQAModel.from_pretrained(model_dir).eval()
        saved_tok = load_tokenizer(model_dir)
        dev_info = build_features(dev_src, model_dir, tmp / "features", BuildConfig(features=fcfg, workers=1), progress=False)
        dev_store = FeatureStore(dev_info.path)
        outputs = score_candidates(model.eval(), dev_store, device="cpu", pad_id=tok.pad_token_id)
        reloaded_outputs = score_candidates(reloaded, dev_store, device="cpu", pad_id=saved_tok.pad_token_id)
        scored, _ = score_outputs(reloaded_outputs, dev)
        runs[family] = Trained(
            losses=[m["train/loss"] for _, m in logger.metrics if "train/loss" in m],
            steps=result.step,
            described=reloaded.describe(),
            fingerprints=(info.manifest["tokenizer"]["fingerprint"], dev_info.manifest["tokenizer"]["fingerprint"]),
            word_prefixes=(word_prefix(tok), word_prefix(saved_tok)),
            store=dev_store,
            outputs=outputs,
            reloaded_outputs=reloaded_outputs,
            metrics=scored.official_metrics(),
        )
    return Families(dev, runs)


def _keys(out) -> list[tuple[str, int, int]]:
    """Row keys of a contract frame or of aligned outputs."""
    out = dec.as_outputs(out) if isinstance(out, pd.DataFrame) else out
    return list(zip(map(str, out.example_id), map(int, out.candidate_index), map(int, out.word_offset)))


def _lengths(frame: pd.DataFrame) -> np.ndarray:
    return np.array([len(x) for x in frame["start_probs"]])


@pytest.mark.parametrize("family", ba.FAMILIES)
def test_each_family_prepares_trains_and_is_scored_by_the_official_metric(families, family):
    run = families.runs[family]
    assert run.described == DESCRIBED[family]
    assert run.steps == STEPS and len(run.losses) == STEPS and np.all(np.isfinite(run.losses))
    assert np.mean(run.losses[-5:]) < np.mean(run.losses[:5]), run.losses  # it learnt something
    # The tokenizer saved in the model folder builds the dev inputs exactly as the training ones.
    assert run.fingerprints[0] == run.fingerprints[1]
    assert run.word_prefixes[0] == run.word_prefixes[1] == (" " if family in ("roberta", "modernbert") else "")
    dev_keys = [(ex.example_id, ci, c.start_token) for ex in families.dev.examples for ci, c in enumerate(ex.candidates)]
    assert _keys(run.outputs) == dev_keys
    # One start/end probability per kept document word, the reloaded folder scoring as the trained model.
    assert _lengths(run.outputs).tolist() == run.store.meta["n_kept"].tolist()
    for col in ("class_probs", "start_probs", "end_probs"):
        for a, b in zip(run.outputs[col], run.reloaded_outputs[col]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in ("long-best-threshold-f1", "short-best-threshold-f1"):
        assert 0.0 <= run.metrics[key] <= 1.0, key


@pytest.mark.parametrize("bpe", ["roberta", "modernbert"])
def test_a_byte_level_bpe_model_ensembles_with_a_wordpiece_one_row_for_row(families, bpe):
    bert, other = families.runs["bert"].outputs, families.runs[bpe].outputs
    aligned = align([bert, other], names=["bert", bpe])
    assert _keys(aligned) == _keys(bert) == _keys(other)
    lb, lo = _lengths(bert), _lengths(other)
    # The tokenizers cut long candidates at different words: the rows the ensemble pads.
    assert (lb != lo).sum() >= 5
    assert np.diff(aligned.offsets).tolist() == np.maximum(lb, lo).tolist()
    ens = dec.as_outputs(ensemble([bert, other], [0.5, 0.5], names=["bert", bpe]))
    want_cls = 0.5 * np.stack(bert["class_probs"]) + 0.5 * np.stack(other["class_probs"])
    np.testing.assert_allclose(ens.class_probs, want_cls, atol=1e-6)
    for r in range(len(bert)):
        n = max(lb[r], lo[r])  # a word only one model kept counts as probability 0 for the other
        want = 0.5 * np.pad(bert["start_probs"][r], (0, n - lb[r])) + 0.5 * np.pad(other["start_probs"][r], (0, n - lo[r]))
        got = ens.start_probs.values[ens.start_probs.offsets[r] : ens.start_probs.offsets[r + 1]]
        np.testing.assert_allclose(got, want, atol=1e-6)
    scored, decoded = score_outputs(ensemble([bert, other], [0.5, 0.5]), families.dev)
    assert len(decoded) == len(families.dev.examples)
    examples = {ex.example_id: ex for ex in families.dev.examples}
    for p in decoded:  # every answer is a candidate's own document words
        cand = examples[p.example_id].candidates[p.long_candidate_index]
        assert (p.long_start_token, p.long_end_token) == (cand.start_token, cand.end_token)
        if p.short_start_token >= 0:
            assert cand.start_token <= p.short_start_token < p.short_end_token <= cand.end_token
    assert 0.0 <= scored.official_metrics()["long-best-threshold-f1"] <= 1.0


def test_the_model_folder_keeps_how_the_encoder_was_read(families, family_backbones, tmp_path):
    """``tfqa_head.json`` records pooling and attention beside the flags the loader checks."""
    import json

    tok = load_tokenizer(family_backbones.dirs["deberta-v3"])
    model = CandidateQAModel.from_backbone(family_backbones.dirs["deberta-v3"], vocab_size=len(tok))
    head = json.loads((model.save_pretrained(tmp_path / "m") / "tfqa_head.json").read_text())
    assert (head["own_pooler"], head["uses_token_types"], head["attention"]) == (True, False, "eager")


@pytest.mark.slow
def test_a_sixth_model_is_trained_and_promoted_by_configuration_alone(family_backbones, tmp_path):
    """docs/backbones.md's route through the real entry points: a backbone name in the settings
    file, variant 4's row with ``-P``-style overrides, and registry/with-deberta-v3.yaml as it is
    in the repository; the run is registered under the sixth entry, not variant 4's bert-large."""
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    repo = Path(__file__).resolve().parents[2]
    train_src = tmp_path / "train.jsonl"
    write_original(train_src, SynthConfig(n_examples=16, seed=3, **SMALL_PAGES))
    settings = tmp_path / "tfqa.yaml"
    settings.write_text(f"backbones:\n  deberta-v3-large: {family_backbones.dirs['deberta-v3']}\ndata:\n  train: {train_src}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "six", "TFQA_CONFIG": str(settings)}

    def entry_point(name: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(repo / "entrypoints" / f"{name}.py"), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    trained = entry_point(
        "train",
        *("--entry-point", "train_bert_large", "--variant", "4", "--max-steps", "4", "--workers", "1"),
        *("--checkpoint-every", "0", "--output-dir", str(tmp_path / "outputs")),
        # Undeclared -P values reach the script as --key value (MLflow's way): overrides of the row.
        *("--backbone_name", "deberta-v3-large", "--registered_model", "tfqa-v6-deberta-v3-large", "--seed", "6"),
        *("--negatives", "random", "--batch_size", "8", "--max_seq_len", "64", "--max_question_len", "10"),
    )
    assert f"encoder {family_backbones.dirs['deberta-v3']}: model_type deberta-v2, token_types no," in trained.stderr
    assert "attention eager" in trained.stderr
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("six").experiment_id], "tags.`tfqa.stage` = 'train_bert_large'")
    assert (run.data.tags["tfqa.variant"], run.data.tags["tfqa.backbone"]) == ("4", "deberta-v3-large")

    promoted = entry_point("promote", "--run-id", run.info.run_id, "--manifest", str(repo / "registry" / "with-deberta-v3.yaml"))
    assert f"tfqa-v6-deberta-v3-large version 1 is now @champion (run {run.info.run_id})" in promoted.stdout
    assert client.get_model_version_by_alias("tfqa-v6-deberta-v3-large", "champion").run_id == run.info.run_id
    assert not client.search_registered_models("name = 'tfqa-v4-bert-large'")
