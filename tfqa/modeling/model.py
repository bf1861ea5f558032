"""The candidate reader: a Hugging Face encoder with a span head and an answer-type head.

One input is ``[CLS] question [SEP] candidate [SEP]``. The model answers two questions about it:

- what kind of answer the candidate holds (5 classes, read from the pooled ``[CLS]`` state):
  ``0`` none, ``1`` long answer only, ``2`` short span, ``3`` NO, ``4`` YES;
- where the short span starts and ends (a start and an end logit per token).

The encoder is whatever ``transformers.AutoModel`` builds (BERT, ALBERT, RoBERTa, DeBERTa-v3,
ModernBERT, ...). Models with a pooler (BERT, ALBERT, RoBERTa) use it; the others (DeBERTa,
ELECTRA, ModernBERT, DistilBERT) get a tanh dense layer of our own over the first token. Token
type ids reach only encoders that have token type embeddings (``config.type_vocab_size >= 2``).
The attention implementation is the one transformers picks for the model (``sdpa`` where the model
supports it, ``eager`` for DeBERTa); a training stage prints it (``tfqa.modeling.loading``) and the
model folder keeps it (``describe``).

On disk a model folder holds the encoder's ``config.json``, ``model.safetensors`` with every weight
(encoder and heads) and ``tfqa_head.json``; nothing in it is pickled.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

NUM_CLASSES = 5
SHORT = 2
"""The answer-type class whose rows carry a start/end span label."""
HEAD_FILE = "tfqa_head.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_FORMAT = 1
MASKED_LOGIT = -10000.0
"""Logit given to padded positions: far below any real logit, yet finite, so softmax and
cross-entropy over a row never see ``inf - inf``."""


class CandidateQAModel(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        config = encoder.config
        hidden = config.hidden_size
        # RoBERTa-style models have a single token type; feeding them type 1 would index out of range.
        self.uses_token_types = int(getattr(config, "type_vocab_size", 0) or 0) >= 2
        self.own_pooler = getattr(encoder, "pooler", None) is None
        self.pooler = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) if self.own_pooler else None
        dropout = getattr(config, "hidden_dropout_prob", None)
        self.dropout = nn.Dropout(0.1 if dropout is None else float(dropout))
        self.classifier = nn.Linear(hidden, NUM_CLASSES)
        self.qa_outputs = nn.Linear(hidden, 2)
        std = float(getattr(config, "initializer_range", 0.02))
        for layer in [self.classifier, self.qa_outputs] + ([self.pooler[0]] if self.pooler is not None else []):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config, *, vocab_size: int | None = None) -> CandidateQAModel:
        """A randomly initialised model from an encoder config (``BertConfig(...)``, ...)."""
        from transformers import AutoModel

        model = cls(AutoModel.from_config(config))
        if vocab_size is not None:
            model.resize_token_embeddings(vocab_size)
        return model

    @classmethod
    def from_backbone(
        cls, backbone_dir: str | os.PathLike, *, vocab_size: int | None = None, num_added_tokens: int = 0
    ) -> CandidateQAModel:
        """A fresh model on a pretrained encoder (a local Hugging Face model folder); the heads are
        new. ``vocab_size`` (usually ``len(tokenizer)``) or ``num_added_tokens`` grows the
        embedding table for tokens added to the tokenizer (the HTML tags)."""
        from transformers import AutoModel

        backbone_dir = _local_dir(backbone_dir)
        # transformers 5 keeps a checkpoint's stored dtype by default; training wants fp32 master
        # weights whatever the backbone was saved in (AMP casts per op).
        encoder = AutoModel.from_pretrained(str(backbone_dir), dtype=torch.float32)
        # transformers may leave parameters as views into the memory-mapped file, at offsets that
        # are not 64-byte aligned; CPU matmul kernels then take another path and round differently.
        # Own, freshly allocated copies make this model compute bit-identically to the same weights
        # loaded by from_pretrained (and detach it from the backbone file). Shared parameters are
        # one object, so they stay shared.
        with torch.no_grad():
            for param in encoder.parameters():
                param.data = param.data.clone()
        model = cls(encoder)
        if vocab_size is None and num_added_tokens:
            vocab_size = encoder.config.vocab_size + num_added_tokens
        if vocab_size is not None:
            model.resize_token_embeddings(vocab_size)
        return model

    @classmethod
    def from_pretrained(
        cls, model_dir: str | os.PathLike, *, vocab_size: int | None = None, device: str | torch.device = "cpu"
    ) -> CandidateQAModel:
        """Load a folder written by ``save_pretrained`` (weights through safetensors only).
        ``vocab_size`` resizes the embeddings after loading (a tokenizer with more added tokens)."""
        from transformers import AutoConfig, AutoModel

        model_dir = _local_dir(model_dir)
        head_path = model_dir / HEAD_FILE
        if not head_path.exists():
            raise FileNotFoundError(
                f"{model_dir}: no {HEAD_FILE}; not a tfqa model folder (use from_backbone for a bare encoder)"
            )
        head = json.loads(head_path.read_text())
        if head.get("format") != HEAD_FORMAT:
            raise ValueError(f"{head_path}: unsupported head format {head.get('format')!r}")
        config = AutoConfig.from_pretrained(str(model_dir))
        model = cls(AutoModel.from_config(config, dtype=torch.float32))
        if model.own_pooler != head["own_pooler"]:
            raise ValueError(
                f"{head_path}: saved with own_pooler={head['own_pooler']}, but this encoder gives {model.own_pooler}"
            )
        load_weights(model, model_dir / WEIGHTS_FILE, device=device)
        if vocab_size is not None and vocab_size != model.vocab_size:
            model.resize_token_embeddings(vocab_size)
        return model

    def save_pretrained(self, model_dir: str | os.PathLike) -> Path:
        """Write ``config.json`` (encoder), ``model.safetensors`` (all weights) and ``tfqa_head.json``."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.encoder.config.save_pretrained(str(model_dir))
        # save_model drops the duplicate names of tied/shared tensors instead of failing on them.
        save_model(self, str(model_dir / WEIGHTS_FILE), metadata={"format": "pt"})
        head = {
            "format": HEAD_FORMAT,
            "num_classes": NUM_CLASSES,
            "classes": ["none", "long", "short", "no", "yes"],
            "own_pooler": self.own_pooler,
            "uses_token_types": self.uses_token_types,
            "model_type": self.encoder.config.model_type,
            "vocab_size": self.vocab_size,
            **{k: v for k, v in self.describe().items() if k in ("pooling", "attention")},
        }
        (model_dir / HEAD_FILE).write_text(json.dumps(head, indent=2) + "\n")
        return model_dir

    def describe(self) -> dict[str, str]:
        """The encoder's kind and how this model reads it: token types, pooling, attention."""
        config = self.encoder.config
        return {
            "model_type": config.model_type,
            "token_types": "yes" if self.uses_token_types else "no",
            "pooling": "own tanh dense over the first token" if self.own_pooler else "the encoder's pooler",
            # transformers' resolved choice (sdpa, eager, flash_attention_2, ...), not the request.
            "attention": str(getattr(config, "_attn_implementation", None) or "eager"),
        }

    # ------------------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return self.encoder.get_input_embeddings().num_embeddings

    def resize_token_embeddings(self, vocab_size: int) -> None:
        """Grow (or shrink) the word embeddings, e.g. to ``len(tokenizer)`` after adding tokens;
        the encoder config's ``vocab_size`` follows, so ``save_pretrained`` round-trips."""
        if vocab_size == self.vocab_size:
            return
        import logging

        # transformers announces its mean-and-covariance initialisation of the new rows (what tfqa
        # wants) with a multi-line note at every training start; one tfqa log line says it instead.
        def not_the_note(record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("The new embeddings will be initialized from a multivariate normal")

        library = logging.getLogger("transformers.modeling_utils")
        library.addFilter(not_the_note)
        try:
            old = self.vocab_size
            self.encoder.resize_token_embeddings(vocab_size)
        finally:
            library.removeFilter(not_the_note)
        logging.getLogger(__name__).info(
            "token embeddings resized %d -> %d (new rows drawn around the old rows' mean and covariance)", old, vocab_size
        )

    def enable_gradient_checkpointing(self) -> str:
        """Recompute each encoder layer's activations in backward instead of keeping them; returns
        how. ALBERT (which transformers 5 refuses) gets its shared layer group checkpointed at
        every use."""
        import torch.utils.checkpoint as cp

        if getattr(self.encoder, "supports_gradient_checkpointing", False):
            self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return "hf"
        groups = getattr(getattr(self.encoder, "encoder", None), "albert_layer_groups", None)
        if groups is None:
            raise ValueError(f"{type(self.encoder).__name__} supports no gradient checkpointing")
        for group in groups:
            group.forward = partial(cp.checkpoint, group.forward, use_reentrant=False)
        return "wrapped layer groups"

    # ------------------------------------------------------------------------------ forward / loss
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(class_logits [B,5], start_logits [B,T], end_logits [B,T])``, float32, with padded
        positions set to ``MASKED_LOGIT``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"token_type_ids": token_type_ids} if self.uses_token_types and token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        tokens = out.last_hidden_state
        pooled = self.pooler(tokens[:, 0]) if self.pooler is not None else out.pooler_output
        class_logits = self.classifier(self.dropout(pooled)).float()
        start_logits, end_logits = self.qa_outputs(tokens).float().unbind(-1)
        pad = attention_mask == 0
        return class_logits, start_logits.masked_fill(pad, MASKED_LOGIT), end_logits.masked_fill(pad, MASKED_LOGIT)

    @staticmethod
    def loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        """``total = class_loss + span_loss``, the means of ``loss_sums`` over this batch.

        ``class_loss``: cross-entropy of the answer type over all rows. ``span_loss``: mean over
        the short-span rows (label 2) of (start CE + end CE) / 2; 0 when the batch has none.
        """
        sums = CandidateQAModel.loss_sums(outputs, batch)
        class_loss = sums["class_sum"] / sums["rows"]
        span_loss = sums["span_sum"] / sums["span_rows"].clamp(min=1.0)
        return {"total": class_loss + span_loss, "class_loss": class_loss, "span_loss": span_loss}

    @staticmethod
    def loss_sums(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        """The losses as sums, with the counts that normalise them: ``class_sum`` over all
        ``rows``, ``span_sum`` over the ``span_rows`` (label 2). The training loop divides them by
        the counts of the whole optimizer step (every micro-batch on every rank), so a step's loss
        is the same however the batch is split over GPUs and micro-batches. The span term is
        computed for every row and masked, so the span head is always part of the graph (DDP
        expects every parameter to get a gradient, even a zero one)."""
        class_logits, start_logits, end_logits = outputs
        labels = batch["label"].to(class_logits.device)
        class_sum = F.cross_entropy(class_logits, labels, reduction="sum")
        is_span = labels == SHORT
        # Non-span rows carry -1 positions: point them at [CLS] (a valid index), then mask them out.
        start = torch.where(is_span, batch["start_position"].to(labels.device), 0)
        end = torch.where(is_span, batch["end_position"].to(labels.device), 0)
        per_row = (
            F.cross_entropy(start_logits, start, reduction="none") + F.cross_entropy(end_logits, end, reduction="none")
        ) / 2
        weight = is_span.to(per_row.dtype)
        return {
            "class_sum": class_sum,
            "span_sum": (per_row * weight).sum(),
            "rows": torch.tensor(float(len(labels)), device=labels.device),
            "span_rows": weight.sum(),
        }


def load_weights(model: nn.Module, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> None:
    """Load ``model.safetensors`` into ``model`` (strict; shared tensors handled)."""
    load_model(model, str(path), strict=True, device=str(device))


def _local_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        # Without this, transformers would take the string for a hub model id and retry the network.
        raise FileNotFoundError(f"model directory not found: {path}")
    return path
