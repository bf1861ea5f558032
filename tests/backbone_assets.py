"""Tiny backbones of every tokenizer family tfqa is tested on, each with a tokenizer trained here
on the real NQ lines of ``../shared/data/`` and a tiny random encoder of the family's own config.

Each folder looks like what tfqa reads from a pretrained checkpoint (``config.json``,
``model.safetensors``, ``tokenizer.json`` + ``tokenizer_config.json``), with the special tokens,
pre-tokenizer and post-processor of the family's real checkpoints:

- ``bert``: WordPiece, BERT normaliser (lowercase) and pre-tokenizer, ``[CLS]``/``[SEP]``, token types;
- ``albert``: a SentencePiece unigram model (``spm_assets``: sentencepiece's own trainer, converted
  by transformers as an ALBERT checkpoint is);
- ``roberta``: byte-level BPE (``Ġ`` marks a word's start), ``<s>``/``</s>``, one token type;
- ``deberta-v3``: SentencePiece-style unigram (``▁`` Metaspace) as DeBERTa-v3's converted
  tokenizer, ``[CLS]``/``[SEP]``, no token type embeddings (``type_vocab_size=0``), eager attention;
- ``modernbert``: byte-level BPE with ``[CLS]``/``[SEP]``, no token types, no pooler, ModernBERT's
  own attention (local/global layers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tfqa.data.readers import is_html_word
from tfqa.data.records import Example

import spm_assets as sa

FAMILIES = ("bert", "albert", "roberta", "deberta-v3", "modernbert")
VOCAB_SIZE = 2000
MAX_POSITIONS = 128
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def text_lines(examples: Iterable[Example], words_per_line: int = 40) -> list[str]:
    """Questions and document text (tag words left out) as lines of a few dozen words."""
    lines = []
    for ex in examples:
        lines.append(ex.question)
        words = [w for w in ex.words if not is_html_word(w)]
        lines.extend(" ".join(words[i : i + words_per_line]) for i in range(0, len(words), words_per_line))
    return lines


def _save(dst: Path, tokenizer, tokenizer_config: dict, config, seed: int) -> Path:
    import torch
    from transformers import AutoModel

    dst.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(dst / "tokenizer.json"))
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(str(dst))
    return dst


def write_bert(dst: Path, lines: list[str], seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    names = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=MAX_POSITIONS, pad_token_id=0, **TINY)
    return _save(dst, tok, {"tokenizer_class": "BertTokenizer", "do_lower_case": True, **names}, config, seed)


def write_albert(dst: Path, examples: list[Example], seed: int = 0) -> Path:
    return sa.write_albert_backbone(dst, examples, seed)[0]


def _byte_level_bpe(lines: list[str], specials: list[str]):
    """A GPT-2-style byte-level BPE trained on ``lines`` (words keep their leading space as Ġ)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(lines, trainer)
    return tok


def write_roberta(dst: Path, lines: list[str], seed: int = 0) -> Path:
    from tokenizers import processors
    from transformers import RobertaConfig

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    tok = _byte_level_bpe(lines, specials)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False, trim_offsets=True)
    names = dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>", unk_token="<unk>")
    # RoBERTa numbers positions from pad_token_id + 1: two more than the longest input.
    config = RobertaConfig(
        vocab_size=tok.get_vocab_size(), max_position_embeddings=MAX_POSITIONS + 2, pad_token_id=1, type_vocab_size=1, **TINY
    )
    tcfg = {"tokenizer_class": "RobertaTokenizer", "mask_token": "<mask>", "add_prefix_space": False, **names}
    return _save(dst, tok, tcfg, config, seed)


def write_deberta_v3(dst: Path, lines: list[str], seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import DebertaV2Config

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]  # deberta-v3's ids 0..3
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, unk_token="[UNK]", show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    names = dict(bos_token="[CLS]", eos_token="[SEP]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]")
    # deberta-v3-large's config, shrunk: relative attention, no absolute positions, no token types.
    config = DebertaV2Config(
        vocab_size=tok.get_vocab_size(),
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=32,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pad_token_id=0,
        **TINY,
    )
    tcfg = {"tokenizer_class": "DebertaV2Tokenizer", "mask_token": "[MASK]", "do_lower_case": False, **names}
    return _save(dst, tok, tcfg, config, seed)


def write_modernbert(dst: Path, lines: list[str], seed: int = 0) -> Path:
    from tokenizers import processors
    from transformers import ModernBertConfig

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = _byte_level_bpe(lines, specials)
    # ModernBERT's tokenizer.json: a template, not RobertaProcessing, and no token types.
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    names = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")
    config = ModernBertConfig(
        vocab_size=tok.get_vocab_size(),
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        cls_token_id=2,
        sep_token_id=3,
        global_attn_every_n_layers=2,
        local_attention=16,
        embedding_dropout=0.0,
        attention_dropout=0.0,
        mlp_dropout=0.0,
        **TINY,
    )
    return _save(dst, tok, {"tokenizer_class": "PreTrainedTokenizerFast", **names}, config, seed)


def write_family(family: str, dst: Path, examples: list[Example], seed: int = 0) -> Path:
    """The tiny backbone folder of ``family`` (one of ``FAMILIES``), its tokenizer trained on ``examples``."""
    if family == "albert":
        return write_albert(dst, examples, seed)
    writer = {"bert": write_bert, "roberta": write_roberta, "deberta-v3": write_deberta_v3, "modernbert": write_modernbert}
    return writer[family](dst, text_lines(examples), seed)
