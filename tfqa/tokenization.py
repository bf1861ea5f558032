"""Tokenizer loading and the HTML-tag special tokens the 1st-place model added.

Nine structural tags get a token of their own; every other tag shares one "other tag" token.
Opening and closing tags map to the same token: the tag's identity carries the structure, and a
closing tag only ever appears at a candidate's end, where its position already says "closing".
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

STRUCTURAL_TAGS = ("P", "Table", "Tr", "Ul", "Ol", "Fl", "Li", "Dd", "Dt")
OTHER_TAG_TOKEN = "<Tag>"
HTML_TOKENS = tuple(f"<{t}>" for t in STRUCTURAL_TAGS) + (OTHER_TAG_TOKEN,)
_STRUCTURAL = {t.lower(): f"<{t}>" for t in STRUCTURAL_TAGS}


def html_token_for(word: str) -> str:
    """The added token an NQ html word maps to: ``</Td>`` -> ``<Tag>``, ``</P>`` -> ``<P>``."""
    name = word.strip("<>/").split("_", 1)[0].lower()
    return _STRUCTURAL.get(name, OTHER_TAG_TOKEN)


def load_tokenizer(path: str | os.PathLike):
    """A fast tokenizer from a local directory, with the HTML tokens added (idempotent).

    Nothing is fetched from a hub: a missing directory is an immediate, clear error instead of
    ~24 s of hub retries (see shared NOTES.md).
    """
    from transformers import AddedToken, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{path}: a fast (Rust) tokenizer is required, got {type(tok).__name__}")
    vocab = tok.get_vocab()
    missing = [t for t in HTML_TOKENS if t not in vocab]
    if missing:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return tok


def html_token_ids(tok) -> dict[str, int]:
    return dict(zip(HTML_TOKENS, tok.convert_tokens_to_ids(list(HTML_TOKENS))))


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
