"""Tokenizer loading and the HTML-tag tokens the model reads in place of NQ's tag words.

Two vocabularies (``FeatureConfig.html_tokens``), each stored in the model folder so inference
builds inputs as the model was trained:

* ``original``, the 1st-place solution's exactly: the nine opening tags ``<P> <Table> <Tr> <Ul>
  <Ol> <Fl> <Li> <Dd> <Dt>``, written exactly so, become nine added tokens ``qw1``..``qw9``;
  every other tag word (closing tags such as ``</P>`` included; a tag word is any word matching
  the original's ``<.+>``) becomes the existing token ``<`` on WordPiece (BERT-family) tokenizers
  and one more added token, ``qw99``, on SentencePiece/BPE ones (ALBERT), whose vocabularies have
  no single-piece ``<``.
* ``tfqa``: the same nine tags get tokens ``<P>``..``<Dt>``, a closing tag shares its opening
  tag's token (the tag's identity carries the structure; a closing tag only ever ends a
  candidate, where its position already says "closing"), and every other tag one added ``<Tag>``.

The nine (ten) added tokens are added in the same order in both, so they get the same ids.
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
    if (path / "spiece.model").exists() and not (path / "tokenizer.json").exists():
        try:  # transformers' own error here would blame a missing `tiktoken`
            import sentencepiece  # noqa: F401
        except ImportError:
            raise ValueError(
                f"{path}: holds only spiece.model (no tokenizer.json); converting it needs the "
                "sentencepiece package (pip install sentencepiece)"
            ) from None
    tok = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{path}: a fast (Rust) tokenizer is required, got {type(tok).__name__}")
    mode = html_tokens or detect_html_tokens(tok) or "tfqa"
    vocab = tok.get_vocab()
    missing = [t for t in added_html_tokens(tok, mode) if t not in vocab]
    if missing:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return tok


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
