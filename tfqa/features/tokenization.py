"""Tokenizer loading and the HTML-tag tokens the model reads in place of NQ's tag words.

Two vocabularies (``FeatureConfig.html_tokens``), each stored in the model folder so inference
builds inputs as the model was trained:

* ``original``, the 1st-place solution's exactly: the nine opening tags ``<P> <Table> <Tr> <Ul>
  <Ol> <Fl> <Li> <Dd> <Dt>``, written exactly so, become nine added tokens ``qw1``..``qw9``;
  every other tag word (closing tags such as ``</P>`` included; a tag word is any word matching
  the original's ``<.+>``) becomes the existing token ``<`` on WordPiece (BERT-family) tokenizers
  and one more added token, ``qw99``, on every other kind (SentencePiece: ALBERT, DeBERTa-v3;
  byte-level BPE: RoBERTa, ModernBERT): the original's rule for its ALBERT, whose SentencePiece
  vocabulary has no single-piece ``<``.
* ``tfqa``: the same nine tags get tokens ``<P>``..``<Dt>``, a closing tag shares its opening
  tag's token (the tag's identity carries the structure; a closing tag only ever ends a
  candidate, where its position already says "closing"), and every other tag one added ``<Tag>``.

The nine (ten) added tokens are added in the same order in both, so they get the same ids.

Words are tokenised one at a time (``tfqa.features.featurize``), which is only right if a word
alone gets the pieces it gets in running text. WordPiece and SentencePiece mark a word's start
themselves (``##`` continuations, ``▁`` prepended to every word), so a word is encoded as it is.
Byte-level BPE (RoBERTa, GPT-2-style vocabularies, ModernBERT) carries a word's start in the
leading space of its first piece (``Ġ``): each word is encoded with that space in front
(``word_prefix``), as ``is_split_into_words=True`` with ``add_prefix_space=True`` does, the first
word of a candidate and the question included.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

HtmlTokenMode = Literal["tfqa", "original"]
HTML_TOKEN_MODES = get_args(HtmlTokenMode)
STRUCTURAL_TAGS = ("P", "Table", "Tr", "Ul", "Ol", "Fl", "Li", "Dd", "Dt")
OTHER_TAG_TOKEN = "<Tag>"
HTML_TOKENS = tuple(f"<{t}>" for t in STRUCTURAL_TAGS) + (OTHER_TAG_TOKEN,)
_STRUCTURAL = {t.lower(): f"<{t}>" for t in STRUCTURAL_TAGS}

ORIGINAL_TOKENS = tuple(f"qw{k}" for k in range(1, len(STRUCTURAL_TAGS) + 1))
ORIGINAL_OTHER_SPM = "qw99"
ORIGINAL_OTHER_WORDPIECE = "<"
_ORIGINAL_MAP = {f"<{t}>": q for t, q in zip(STRUCTURAL_TAGS, ORIGINAL_TOKENS)}
# The original's test for a tag word (re.match: anchored at the start only).
ORIGINAL_TAG_RE = re.compile(r"<.+>")


def check_html_tokens(mode: str) -> str:
    if mode not in HTML_TOKEN_MODES:
        raise ValueError(f"html_tokens must be one of {', '.join(HTML_TOKEN_MODES)}, got {mode!r}")
    return mode


def html_token_for(word: str) -> str:
    """The ``tfqa``-mode token of an NQ html word: ``</Td>`` -> ``<Tag>``, ``</P>`` -> ``<P>``."""
    name = word.strip("<>/").split("_", 1)[0].lower()
    return _STRUCTURAL.get(name, OTHER_TAG_TOKEN)


def is_wordpiece(tok) -> bool:
    return type(tok.backend_tokenizer.model).__name__ == "WordPiece"


def _pre_tokenizers(tok) -> list[dict]:
    """The pre-tokenizer steps of ``tok``, a ``Sequence`` flattened (from its JSON form: the
    Python objects do not expose their settings uniformly)."""
    pre = tok.backend_tokenizer.pre_tokenizer
    todo, steps = [json.loads(pre.__getstate__())] if pre is not None else [], []
    while todo:
        step = todo.pop(0)
        if step.get("type") == "Sequence":
            todo[:0] = step.get("pretokenizers", [])
        else:
            steps.append(step)
    return steps


def word_prefix(tok) -> str:
    """What goes in front of a word encoded on its own so that it gets the pieces it gets inside a
    sentence: a space for byte-level BPE (and a SentencePiece pre-tokenizer that never prepends
    ``▁``), whose word-initial pieces carry the space; nothing for the others. A pre-tokenizer that
    adds the space itself (``add_prefix_space=True``) needs none."""
    for step in _pre_tokenizers(tok):
        if step.get("type") == "ByteLevel" and not step.get("add_prefix_space", False):
            return " "
        if step.get("type") == "Metaspace" and step.get("prepend_scheme", "always") == "never":
            return " "
    return ""


def tokenizer_kind(tok) -> str:
    """``wordpiece``, ``sentencepiece`` (unigram or a BPE over ``▁`` words), ``byte-level BPE``,
    or the model's own name for anything else: what the backbones table in docs/backbones.md lists."""
    model = type(tok.backend_tokenizer.model).__name__
    steps = {step.get("type") for step in _pre_tokenizers(tok)}
    if model == "WordPiece":
        return "wordpiece"
    if model == "Unigram" or "Metaspace" in steps:
        return "sentencepiece"
    if model == "BPE" and "ByteLevel" in steps:
        return "byte-level BPE"
    return model.lower()


def missing_input_tokens(tok) -> list[str]:
    """The special tokens an input needs that ``tok`` lacks: ``[CLS]`` and ``[SEP]`` (by whatever
    name, e.g. RoBERTa's ``<s>`` ``</s>``) frame every input; ``[UNK]`` stands in for a word the
    tokenizer reduces to nothing, which cannot happen once a byte-level word has its space."""
    needed = ["cls_token", "sep_token"] + (["unk_token"] if word_prefix(tok) == "" else [])
    return [name for name in needed if getattr(tok, f"{name}_id", None) is None]


def added_html_tokens(tok, mode: str) -> tuple[str, ...]:
    """The tokens ``mode`` adds to ``tok``'s vocabulary, in the order they are added."""
    if check_html_tokens(mode) == "tfqa":
        return HTML_TOKENS
    return ORIGINAL_TOKENS if is_wordpiece(tok) else ORIGINAL_TOKENS + (ORIGINAL_OTHER_SPM,)


@dataclass(frozen=True)
class HtmlTokens:
    """Maps an NQ tag word to the one token id the model reads in its place."""

    mode: str
    ids: dict[str, int]
    """Token string -> id of the mode's tokens."""
    other_id: int
    """The id of every tag word that is not one of the nine structural tags."""

    @classmethod
    def of(cls, tok, mode: str) -> HtmlTokens:
        if check_html_tokens(mode) == "tfqa":
            names = list(HTML_TOKENS)
            other = OTHER_TAG_TOKEN
        else:
            other = ORIGINAL_OTHER_WORDPIECE if is_wordpiece(tok) else ORIGINAL_OTHER_SPM
            names = list(ORIGINAL_TOKENS) + [other]
        vocab = tok.get_vocab()
        missing = [n for n in names if n not in vocab]
        if missing:
            raise ValueError(f"html_tokens={mode}: the tokenizer lacks {missing} (load it with load_tokenizer(dir, {mode!r}))")
        ids = {n: vocab[n] for n in names}
        return cls(mode, ids, ids[other])

    def tag_flags(self, words: list[str], is_html: list[bool], needed) -> list[bool] | dict[int, bool]:
        """Which of the ``needed`` word indices are read as tags: NQ's html flags, or in
        ``original`` mode the original's own test on the word (indexable by word index)."""
        if self.mode == "original":
            return {int(i): bool(ORIGINAL_TAG_RE.match(words[i])) for i in needed}
        return is_html

    def id_for(self, word: str) -> int:
        if self.mode == "original":
            name = _ORIGINAL_MAP.get(word)
            return self.ids[name] if name else self.other_id
        return self.ids[html_token_for(word)]


def detect_html_tokens(tok) -> str | None:
    """The mode whose tokens ``tok`` already holds (a saved tfqa tokenizer), else None."""
    vocab = tok.get_vocab()
    for mode in HTML_TOKEN_MODES:
        if all(t in vocab for t in added_html_tokens(tok, mode)):
            return mode
    return None


def load_tokenizer(path: str | os.PathLike, html_tokens: str | None = None):
    """A fast tokenizer from a local directory, with the HTML tokens of ``html_tokens`` added
    (idempotent). ``None``: a tokenizer saved by tfqa keeps the tokens it holds; a bare one gets
    the ``tfqa`` ones.

    Nothing is fetched from a hub: a missing directory is an immediate, clear error instead of
    ~24 s of hub retries (see shared NOTES.md).
    """
    from transformers import AddedToken, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # ALBERT ships spiece.model, DeBERTa-v3 spm.model: without a tokenizer.json, transformers
    # converts them, which needs sentencepiece (its own error would blame a missing `tiktoken`).
    spm_file = next((n for n in ("spiece.model", "spm.model") if (path / n).exists()), None)
    if spm_file and not (path / "tokenizer.json").exists():
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            raise ValueError(
                f"{path}: holds only {spm_file} (no tokenizer.json); converting it needs the "
                "sentencepiece package (pip install sentencepiece)"
            ) from None
    check_encoder_config(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tok, "is_fast", False):
        raise ValueError(
            f"{path}: no fast tokenizer: {type(tok).__name__} is a Python tokenizer; tfqa needs one transformers "
            "loads as a fast (Rust) tokenizer, e.g. from a tokenizer.json in this folder"
        )
    lacking = missing_input_tokens(tok)
    if lacking:
        raise ValueError(
            f"{path}: the tokenizer has no {' and no '.join(lacking)} (tokenizer_config.json), which every tfqa input needs"
        )
    mode = html_tokens or detect_html_tokens(tok) or "tfqa"
    vocab = tok.get_vocab()
    missing = [t for t in added_html_tokens(tok, mode) if t not in vocab]
    if missing:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return tok


def check_encoder_config(path: Path) -> None:
    """Refuse, in one line naming ``path``, a model whose config tfqa's reader cannot take: a
    decoder-only or encoder-decoder model. A folder without ``config.json`` (a tokenizer alone)
    passes: what it is a tokenizer of is checked where a model is built."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if not (path / "config.json").is_file():
        return
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: config.json is not a model config transformers can read ({first})") from None
    kind = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{path}: config.json: model_type {kind!r} is an encoder-decoder model; tfqa needs an encoder")
    if kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ValueError(
            f"{path}: config.json: model_type {kind!r} is not an encoder (no masked-LM model of this type in "
            "transformers, e.g. a decoder-only model); tfqa needs an encoder such as BERT, RoBERTa, DeBERTa or ModernBERT"
        )
    if getattr(config, "is_decoder", False):
        raise ValueError(f"{path}: config.json sets is_decoder: true (causal attention); tfqa needs a bidirectional encoder")


def pad_id_of(tok) -> int:
    """The id batches of ``tok``'s tokens are padded with: its pad token, else 0 (padded positions
    are masked out, so any id does; a tokenizer without a pad token must still batch)."""
    return int(tok.pad_token_id or 0)


def tokenizer_fingerprint(tok) -> str:
    """A hash of everything that decides token ids: vocabulary, added tokens, normaliser,
    pre-tokeniser and model. Truncation and padding are left out: the tokenizer changes them at
    run time (MiniLM's file ships padding to 128 that the first call resets)."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(spec, sort_keys=True).encode())
    h.update(type(tok).__name__.encode())
    return h.hexdigest()
