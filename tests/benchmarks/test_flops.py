"""benchmarks/flops.py: the training FLOP count behind MFU, against counts done by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _flops_module():
    spec = importlib.util.spec_from_file_location("flops", REPO / "benchmarks" / "flops.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["flops"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


flops = _flops_module()


def _model(config):
    """A CandidateQAModel on ``config`` with its parameters on the meta device (shapes only, no memory)."""
    from transformers import AutoModel

    from tfqa.modeling.model import CandidateQAModel

    with torch.device("meta"):
        return CandidateQAModel(AutoModel.from_config(config))


def test_bert_base_counts_non_embedding_parameters_and_attention_as_counted_by_hand():
    from transformers import BertConfig

    model = _model(BertConfig())  # bert-base: vocab 30,522, 12 layers, width 768, FFN 3,072, 512 positions
    h, ffn, layers = 768, 3072, 12
    per_layer = 4 * (h * h + h) + 2 * h + (h * ffn + ffn) + (ffn * h + h) + 2 * h  # Q, K, V, O; LN; FFN in, out; LN
    heads = (h * h + h) + (h * 5 + 5) + (h * 2 + 2)  # BERT's pooler, tfqa's answer-type and span heads
    n = layers * per_layer + 2 * h + heads  # + the embeddings' LayerNorm (the lookup tables are not multiplied)
    assert n == 85_651_975

    counter = flops.FlopCounter.of(model)
    assert counter == flops.FlopCounter(n_params=n, n_layers=layers, d_model=h)
    assert flops.embedding_table_params(model) == (30522 + 512 + 2) * h
    # Per token at 360 subwords: 6 N for the weights, 12 x layers x seq x width for attention (forward + backward).
    assert counter.per_token(360) == 6 * n + 12 * layers * 360 * h
    # What train_step.py counted before: every parameter, embedding tables too, 1.28x the model FLOPs.
    all_params = sum(p.numel() for p in model.parameters())
    assert round(all_params / n, 2) == 1.28


def test_albert_counts_its_shared_layer_once_per_use():
    from transformers import AlbertConfig

    h, ffn, emb, layers = 32, 64, 16, 3
    config = AlbertConfig(vocab_size=100, embedding_size=emb, hidden_size=h, num_attention_heads=2, intermediate_size=ffn)
    config.num_hidden_layers = layers
    model = _model(config)
    layer = 4 * (h * h + h) + 2 * h + (h * ffn + ffn) + (ffn * h + h) + 2 * h
    mapping_in = emb * h + h  # the factorised embedding's projection to the hidden width
    heads = (h * h + h) + (h * 5 + 5) + (h * 2 + 2)
    n = layers * layer + mapping_in + 2 * emb + heads  # one set of layer weights, used three times
    counter = flops.FlopCounter.of(model)
    assert counter.n_params == n
    assert counter.n_params > sum(p.numel() for p in model.parameters())  # parameters() sees the shared layer once


def test_useful_flops_follow_each_rows_length_and_computed_ones_the_padded_width():
    counter = flops.FlopCounter(n_params=1000, n_layers=2, d_model=8)
    lengths = [10, 30]
    assert counter.useful(lengths) == sum(6 * 1000 * n + 12 * 2 * 8 * n * n for n in lengths)
    assert counter.computed(rows=2, width=32) == 2 * 32 * (6 * 1000 + 12 * 2 * 32 * 8)
    assert counter.computed(rows=2, width=32) > counter.useful(lengths)


@pytest.mark.parametrize("seq", [1, 360])
def test_per_token_is_the_useful_flops_of_one_row_over_its_length(seq):
    counter = flops.FlopCounter(n_params=5, n_layers=3, d_model=4)
    assert counter.useful([seq]) == pytest.approx(seq * counter.per_token(seq))
