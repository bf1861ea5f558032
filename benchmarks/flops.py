"""Training FLOPs of a candidate reader, for model FLOP utilisation (MFU).

Per token of a row of ``seq`` real tokens, one training step (forward + backward) costs

    flops_per_token(seq) = 6 * N + 12 * n_layers * seq * d_model

- ``N`` is the non-embedding parameters a token passes through (``applied_non_embedding_params``):
  every parameter of the model (encoder, pooler, heads) except the embedding tables (word,
  position and token-type lookups cost no multiply-adds), each counted once per use. ALBERT's
  shared layer group is used ``num_hidden_layers / num_hidden_groups`` times per forward pass and
  is counted that many times; ``model.parameters()`` would count it once (12x too few FLOPs for
  albert-xxlarge). ``6 * N``: 2 FLOPs per multiply-add, forward, and twice that backward.
- ``12 * n_layers * seq * d_model``: attention's two matrix products (Q.K^T and the weights times
  V), each ``2 * seq * d_model`` FLOPs per token per layer forward, times 3 for forward + backward.
  ``n_layers`` counts layer applications (ALBERT's too), ``d_model`` is ``hidden_size``.

A step's useful FLOPs sum that over each row's real tokens (its attention over its own length):
``sum_i 6 N L_i + 12 n_layers d_model L_i^2``; padding is not useful work. The FLOPs the hardware
computes for a batch padded to width ``W`` are ``B * (6 N W + 12 n_layers d_model W^2)``.

Left out, as in the usual MFU convention (PaLM, appendix B): softmax, layer norms, activations,
biases' adds, the optimizer, and the forward pass that gradient checkpointing recomputes (MFU
counts the model's FLOPs, not the hardware's; checkpointing lowers MFU by design).

For bert-base (vocab 30,522; 12 layers, width 768) with tfqa's heads: N = 85,651,975 (the
embedding tables are 23,835,648 more; counting them made MFU 1.28x too high), and at 360 tokens
6 N = 514 MFLOPs + attention 40 MFLOPs per token. bert-large: N = 303.4M, 1.93 GFLOPs per token at
360; albert-xxlarge: N = 2.43G applied (222.6M distinct parameters), 14.8 GFLOPs per token at 360,
7.7x bert-large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def embedding_table_params(model) -> int:
    """Parameters of the encoder's lookup tables (``nn.Embedding`` weights: word, position, token type)."""
    from torch import nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))


def shared_layer_extra_params(model) -> int:
    """What ``parameters()`` misses of a model that applies a layer several times: ALBERT's layer
    groups each serve ``num_hidden_layers / num_hidden_groups`` layers and are counted once."""
    encoder = getattr(model, "encoder", model)
    config = encoder.config
    if config.model_type != "albert":
        return 0
    groups = encoder.encoder.albert_layer_groups
    uses = config.num_hidden_layers // config.num_hidden_groups
    return (uses - 1) * sum(p.numel() for p in groups.parameters())


def applied_non_embedding_params(model) -> int:
    """``N`` of the module docstring: every parameter a token's multiply-adds use, once per use."""
    distinct = sum(p.numel() for p in model.parameters())  # a shared tensor is yielded once
    return distinct - embedding_table_params(model) + shared_layer_extra_params(model)


@dataclass(frozen=True)
class FlopCounter:
    """Training FLOPs (forward + backward) of one model; see the module docstring."""

    n_params: int
    """``N``: applied non-embedding parameters."""
    n_layers: int
    """Layer applications per forward pass."""
    d_model: int

    @classmethod
    def of(cls, model) -> FlopCounter:
        config = getattr(model, "encoder", model).config
        return cls(applied_non_embedding_params(model), int(config.num_hidden_layers), int(config.hidden_size))

    def per_token(self, seq: int) -> float:
        """FLOPs per token of a row of ``seq`` tokens: ``6 N + 12 n_layers seq d_model``."""
        return 6.0 * self.n_params + 12.0 * self.n_layers * seq * self.d_model

    def useful(self, lengths) -> float:
        """A step's model FLOPs over its rows' real tokens (``lengths``: real tokens per row)."""
        lengths = np.asarray(lengths, dtype=np.float64)
        return float(np.sum(6.0 * self.n_params * lengths + 12.0 * self.n_layers * self.d_model * lengths**2))

    def computed(self, rows: int, width: int) -> float:
        """The FLOPs of ``rows`` rows padded to ``width``: what the hardware multiplies, padding included."""
        return rows * width * self.per_token(width)
