"""CandidateQAModel: outputs and masking, the loss, added tokens, save/load without pickle."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from tfqa.features.batching import collate
from tfqa.modeling.model import HEAD_FILE, MASKED_LOGIT, NUM_CLASSES, CandidateQAModel

from tiny_training import FakeCandidates, tiny_model, write_backbone

os.environ.setdefault("HF_HUB_OFFLINE", "1")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rows():
    return FakeCandidates(12, seed=1)


def _outputs(model, batch):
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


@pytest.mark.parametrize("kind", ["bert", "albert", "distilbert"])
def test_forward_shapes_and_padding_mask(kind, rows):
    model = tiny_model(kind).eval()
    items = [rows[i] for i in range(4)]
    batch = collate(items, pad_id=0)
    cls, start, end = _outputs(model, batch)
    b, t = batch["input_ids"].shape
    assert cls.shape == (b, NUM_CLASSES) and start.shape == end.shape == (b, t)
    assert cls.dtype == start.dtype == torch.float32
    pad = batch["attention_mask"] == 0
    assert pad.any(), "the rows should differ in length"
    assert (start[pad] == MASKED_LOGIT).all() and (end[pad] == MASKED_LOGIT).all()
    assert (start[~pad] > MASKED_LOGIT / 2).all()
    # Padding never changes a row's outputs: the same row alone (no padding) gives the same numbers.
    i = int(pad.sum(1).argmax())
    alone = _outputs(model, collate([items[i]], pad_id=0))
    n = len(items[i]["input_ids"])
    torch.testing.assert_close(alone[0][0], cls[i], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone[1][0], start[i, :n], rtol=1e-4, atol=1e-5)


def test_own_pooler_only_without_encoder_pooler():
    assert tiny_model("bert").pooler is None and not tiny_model("bert").own_pooler
    assert tiny_model("albert").pooler is None
    distil = tiny_model("distilbert")
    assert distil.own_pooler and distil.pooler is not None and not distil.uses_token_types


def test_loss_uses_span_only_on_short_rows(rows):
    model = tiny_model(dropout=0.0).eval()
    items = [rows[i] for i in range(8)]
    batch = collate(items, pad_id=0)
    labels = batch["label"]
    assert (labels == 2).any() and (labels != 2).any()
    outputs = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    losses = model.loss(outputs, batch)
    cls, start, end = outputs
    span = labels == 2
    expected_span = (
        F.cross_entropy(start[span], batch["start_position"][span]) + F.cross_entropy(end[span], batch["end_position"][span])
    ) / 2
    torch.testing.assert_close(losses["span_loss"], expected_span)
    torch.testing.assert_close(losses["class_loss"], F.cross_entropy(cls, labels))
    torch.testing.assert_close(losses["total"], losses["class_loss"] + losses["span_loss"])
    # Whatever non-span rows carry as positions does not matter.
    other = dict(
        batch,
        start_position=torch.where(span, batch["start_position"], 3),
        end_position=torch.where(span, batch["end_position"], 5),
    )
    torch.testing.assert_close(model.loss(outputs, other)["span_loss"], losses["span_loss"])


def test_loss_without_span_rows_is_zero_but_keeps_the_head_in_the_graph(rows):
    model = tiny_model(dropout=0.0)
    items = [r for r in (rows[i] for i in range(len(rows))) if r["label"] != 2][:4]
    batch = collate(items, pad_id=0)
    losses = model.loss(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]), batch)
    assert float(losses["span_loss"].detach()) == 0.0
    losses["total"].backward()
    # DDP needs a gradient (here zero) for every parameter, including the span head.
    assert model.qa_outputs.weight.grad is not None and not model.qa_outputs.weight.grad.any()
    assert model.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_save_load_round_trip_identical_outputs(kind, rows, tmp_path):
    model = tiny_model(kind).eval()
    model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "model.safetensors", HEAD_FILE]
    head = json.loads((tmp_path / "m" / HEAD_FILE).read_text())
    assert head["model_type"] == kind and head["num_classes"] == NUM_CLASSES
    loaded = CandidateQAModel.from_pretrained(tmp_path / "m").eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    batch = collate([rows[i] for i in range(5)], pad_id=0)
    for a, b in zip(_outputs(model, batch), _outputs(loaded, batch)):
        assert torch.equal(a, b)


def test_from_pretrained_refuses_a_bare_encoder(tmp_path):
    write_backbone(tmp_path / "bb")
    with pytest.raises(FileNotFoundError, match=HEAD_FILE):
        CandidateQAModel.from_pretrained(tmp_path / "bb")
    with pytest.raises(FileNotFoundError, match="not found"):
        CandidateQAModel.from_backbone(tmp_path / "missing")


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_added_tokens_resize_and_round_trip(kind, tmp_path):
    backbone = write_backbone(tmp_path / "bb", kind)
    base = CandidateQAModel.from_backbone(backbone)
    grown = CandidateQAModel.from_backbone(backbone, num_added_tokens=10)
    assert grown.vocab_size == base.vocab_size + 10 == grown.encoder.config.vocab_size
    old = base.encoder.get_input_embeddings().weight
    assert torch.equal(grown.encoder.get_input_embeddings().weight[: old.shape[0]], old)
    assert CandidateQAModel.from_backbone(backbone, vocab_size=base.vocab_size + 10).vocab_size == grown.vocab_size

    grown.save_pretrained(tmp_path / "m")
    loaded = CandidateQAModel.from_pretrained(tmp_path / "m")
    assert loaded.vocab_size == grown.vocab_size
    ids = torch.tensor([[1, 5, base.vocab_size + 9, 2]])
    with torch.no_grad():
        assert torch.equal(grown.eval()(ids)[0], loaded.eval()(ids)[0])
    # A tokenizer with yet more tokens: load, then grow.
    assert CandidateQAModel.from_pretrained(tmp_path / "m", vocab_size=grown.vocab_size + 3).vocab_size == grown.vocab_size + 3


def test_backbone_pooler_and_encoder_weights_are_reused(tmp_path):
    from safetensors.torch import load_file

    backbone = write_backbone(tmp_path / "bb")
    model = CandidateQAModel.from_backbone(backbone)
    saved = load_file(str(backbone / "model.safetensors"))
    assert any(k.startswith("pooler.") for k in saved)
    mine = model.encoder.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(mine[name], tensor), name


def test_growing_the_embeddings_prints_no_library_note(tmp_path):
    """transformers prints a multi-line note about its initialisation of new embedding rows at every
    training start; tfqa keeps stderr to its own lines. A fresh process: the note is printed once
    per process, so an earlier test in this one would hide it."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    backbone = write_backbone(tmp_path / "backbone")
    script = (
        "from tfqa.modeling.model import CandidateQAModel\n"
        f"m = CandidateQAModel.from_backbone({str(backbone)!r}, num_added_tokens=5)\n"
        "print(m.vocab_size)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'tests'}", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["105"]
    assert "multivariate normal" not in proc.stderr and "[transformers]" not in proc.stderr, proc.stderr
