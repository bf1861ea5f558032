"""Candidate features: one model input per (question, long-answer candidate).

``[CLS] question [SEP] candidate [SEP]``, the question cut to ``max_question_len`` subwords and the
candidate's tail words dropped so the whole fits in ``max_seq_len``. Each word is tokenised on
its own, as it reads in running text (``word_prefix``: a byte-level BPE word with its leading
space, see ``tfqa.features.tokenization``), so a candidate's subwords are a contiguous slice of
the document's concatenated word pieces: nested candidates share the work, and every kept word
records the position of its first subword. Start/end predictions are read at those positions,
which is what lets models with different tokenizers be averaged per word.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from itertools import chain, compress

import numpy as np

from tfqa.data.records import AnswerClass, Example
from tfqa.features.labels import candidate_labels
from tfqa.features.tokenization import HtmlTokenMode, HtmlTokens, check_html_tokens, word_prefix


@dataclass(frozen=True)
class FeatureConfig:
    max_seq_len: int = 360
    """Whole input length in subwords, special tokens included."""
    max_question_len: int = 64
    """Question length in subwords; longer questions lose their tail."""
    html_tokens: HtmlTokenMode = "tfqa"
    """Which token a tag word becomes: ``original`` (the 1st place's: nine opening tags get added
    tokens, every other tag ``<``, or ``qw99`` on SentencePiece tokenizers) or ``tfqa`` (closing
    tags share their opening tag's token, other tags one ``<Tag>``). See ``tfqa.features.tokenization``."""

    def __post_init__(self) -> None:
        check_html_tokens(self.html_tokens)
        if self.max_question_len < 1 or self.max_seq_len < self.max_question_len + 4:
            raise ValueError(
                f"max_seq_len ({self.max_seq_len}) must leave room for the question "
                f"({self.max_question_len}), three special tokens and one candidate word"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FeatureCounts:
    examples: int = 0
    candidates: int = 0
    by_class: list[int] = field(default_factory=lambda: [0] * len(AnswerClass))
    truncated_candidates: int = 0
    truncated_spans: int = 0
    """Short spans that fell beyond the truncation: their label became LONG."""

    def add(self, other: FeatureCounts) -> None:
        self.examples += other.examples
        self.candidates += other.candidates
        self.by_class = [a + b for a, b in zip(self.by_class, other.by_class)]
        self.truncated_candidates += other.truncated_candidates
        self.truncated_spans += other.truncated_spans

    def as_metrics(self) -> dict[str, int]:
        out = {
            "examples": self.examples,
            "candidates": self.candidates,
            "truncated_candidates": self.truncated_candidates,
            "truncated_spans": self.truncated_spans,
        }
        out.update({f"class_{c.value}_{c.name.lower()}": n for c, n in zip(AnswerClass, self.by_class)})
        return out


# Column order of a feature table; ``tfqa.features.cache`` gives it an Arrow schema.
FEATURE_COLUMNS = (
    "example_id",
    "candidate_index",
    "word_offset",
    "n_words",
    "n_kept",
    "question_len",
    "top_level",
    "label",
    "start_word",
    "end_word",
    "input_ids",
    "word_positions",
)


class CandidateFeaturizer:
    """Turns examples into feature columns; keeps a bounded cache of word -> subword ids."""

    def __init__(self, tokenizer, cfg: FeatureConfig = FeatureConfig(), word_cache_size: int = 500_000):
        self.tok, self.cfg = tokenizer, cfg
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.unk_id = tokenizer.unk_token_id
        self._html = HtmlTokens.of(tokenizer, cfg.html_tokens)
        # In ``original`` mode a word is a tag by its spelling alone (the original's regex), so its
        # cache entry is already its tag id and a page needs one dict lookup per word. In ``tfqa``
        # mode the input's per-token html flag decides: entries are the text pieces, and flagged
        # positions take their tag id from ``_tag_cache`` instead.
        self._tags_by_spelling = cfg.html_tokens == "original"
        self._cache: dict[str, tuple[int, ...]] = {}
        self._tag_cache: dict[str, tuple[int]] = {}
        self._cache_size = word_cache_size
        self._encoder = _word_encoder(tokenizer)
        self.word_prefix = word_prefix(tokenizer)
        """Put before each word and the question when encoding them (the cache is keyed by the bare word)."""

    # -- tokenisation ---------------------------------------------------------------------------
    def _word_ids(self, words: list[str]) -> list[tuple[int, ...]]:
        """The ids of each word as read when the input does not flag it html (see __init__)."""
        cache = self._cache
        todo = set(words).difference(cache)
        if todo and len(cache) + len(todo) > self._cache_size:
            # Bounded memory on 300k-document runs: start afresh, then refill with this call's words.
            cache.clear()
            self._tag_cache.clear()
            todo = set(words)
        if todo:
            text = list(todo)
            if self._tags_by_spelling:
                flags = self._html.tag_flags(text, [], range(len(text)))
                for k in [k for k in range(len(text)) if flags[k]]:
                    cache[text[k]] = (self._html.id_for(text[k]),)
                text = [w for k, w in enumerate(text) if not flags[k]]
            if text:
                for w, ids in zip(text, self._encode(text)):
                    # A word made only of characters the tokenizer drops (zero-width space, control
                    # characters) still needs a position for its start/end probability.
                    cache[w] = tuple(ids) if ids else (self.unk_id,)
        return list(map(cache.__getitem__, words))

    def _encode(self, words: list[str]) -> list[list[int]]:
        """``tok([prefix + w for w in words], add_special_tokens=False)["input_ids"]``, through the
        Rust tokenizer alone where that is what the call runs (see ``_word_encoder``)."""
        if self.word_prefix:
            words = [self.word_prefix + w for w in words]
        if self._encoder is None:
            return self.tok(words, add_special_tokens=False)["input_ids"]
        # As transformers sets it on every call (tokenizers keep it as their split_special_tokens).
        self._encoder.encode_special_tokens = bool(self.tok.split_special_tokens)
        return [e.ids for e in self._encoder.encode_batch_fast(words, add_special_tokens=False)]

    def _tag_ids(self, words: list[str]) -> list[tuple[int]]:
        tags = self._tag_cache
        for w in set(words).difference(tags):
            tags[w] = (self._html.id_for(w),)
        return list(map(tags.__getitem__, words))

    def _piece_ids(self, ex: Example, word_idx: list[int]) -> list[tuple[int, ...]]:
        """Subword ids of the words ``word_idx`` of ``ex``, a tag word's being its one tag id."""
        words = list(map(ex.words.__getitem__, word_idx))
        pieces = self._word_ids(words)
        if not self._tags_by_spelling:
            flagged = list(compress(range(len(word_idx)), map(ex.is_html.__getitem__, word_idx)))
            for k, tag in zip(flagged, self._tag_ids([words[k] for k in flagged])):
                pieces[k] = tag
        return pieces

    def question_ids(self, question: str) -> list[int]:
        ids = self.tok(self.word_prefix + question, add_special_tokens=False)["input_ids"]
        return ids[: self.cfg.max_question_len]

    # -- features -------------------------------------------------------------------------------
    def featurize(self, ex: Example, candidate_indices: list[int]) -> tuple[dict[str, list], FeatureCounts]:
        """Feature columns for the chosen candidates of one example, with their counts."""
        cfg = self.cfg
        q_ids = self.question_ids(ex.question)
        prefix = np.array([self.cls_id, *q_ids, self.sep_id], dtype=np.int32)
        budget = cfg.max_seq_len - len(prefix) - 1
        n_doc = len(ex.words)
        cands = [ex.candidates[ci] for ci in candidate_indices]
        n_rows = len(cands)
        first = np.array([c.start_token for c in cands], dtype=np.int64)
        last = np.array([c.end_token for c in cands], dtype=np.int64)

        # Only words that can land in some input are tokenised: each word costs >= 1 subword,
        # so at most ``budget`` words of a candidate can be kept.
        reach = np.minimum(last, first + budget)
        needed = np.bincount(first, minlength=n_doc + 1) - np.bincount(reach, minlength=n_doc + 1)
        word_idx = np.flatnonzero(np.cumsum(needed[:n_doc]) > 0)
        piece_ids = self._piece_ids(ex, word_idx.tolist())
        lengths = np.zeros(n_doc, dtype=np.int32)
        lengths[word_idx] = np.fromiter(map(len, piece_ids), dtype=np.int32, count=len(piece_ids))
        flat = np.fromiter(chain.from_iterable(piece_ids), dtype=np.int32)
        # starts[i] = offset of word i's first piece in ``flat`` (words not needed have length 0).
        starts = np.zeros(n_doc + 1, dtype=np.int32)
        np.cumsum(lengths, out=starts[1:])

        # Words s..s+k-1 of a candidate fit when starts[s+k] <= starts[s] + budget; starts never
        # decreases, so the count comes from one search over the whole page for all candidates,
        # capped at the words the candidate has (or the budget allows).
        fits = np.searchsorted(starts, starts[first] + budget, side="right") - 1
        kept = np.minimum(fits - first, reach - first)
        n_words = last - first

        # All rows at once, without a per-candidate numpy call (a page has up to ~500 candidates):
        # row r is prefix + flat[a_r:b_r] + [SEP] and its positions are where its kept words'
        # first pieces land. Both are built in one buffer each and handed out as views.
        a, b = starts[first], starts[first + kept]
        p = len(prefix)
        row_end = np.cumsum(p + (b - a) + 1)
        row_start = row_end - (p + (b - a) + 1)
        ids = np.empty(int(row_end[-1]) if n_rows else 0, dtype=np.int32)
        ids[(row_start[:, None] + np.arange(p)).ravel()] = np.tile(prefix, n_rows)
        ids[_concat_ranges(row_start + p, row_end - 1)] = flat[_concat_ranges(a, b)]
        ids[row_end - 1] = self.sep_id
        positions = starts[_concat_ranges(first, first + kept)] - np.repeat(a - p, kept)
        pos_end = np.cumsum(kept)

        kept_list = kept.tolist()
        labels = [int(AnswerClass.NOT_ANSWER)] * n_rows
        start_words, end_words = [-1] * n_rows, [-1] * n_rows
        counts = FeatureCounts(examples=1, candidates=n_rows)
        counts.truncated_candidates = int(np.count_nonzero(kept < n_words))
        label_of = candidate_labels(ex)
        for r, ci in enumerate(candidate_indices):
            gold = label_of.get(ci)
            if gold is None:
                continue
            label, s, n_kept = gold.label, cands[r].start_token, kept_list[r]
            if label == AnswerClass.SHORT:
                # The end label is the span's last word (inclusive), which is what decoding
                # reads the end head as (``tfqa.inference.decode``).
                start_w = min(sp.start_token for sp in gold.spans) - s
                end_w = max(sp.end_token for sp in gold.spans) - 1 - s
                if 0 <= start_w <= end_w < n_kept:
                    start_words[r], end_words[r] = start_w, end_w
                else:
                    label = AnswerClass.LONG
                    counts.truncated_spans += 1
            labels[r] = int(label)
        counts.by_class = np.bincount(labels, minlength=len(AnswerClass)).tolist()

        cols = {  # in FEATURE_COLUMNS order
            "example_id": [ex.example_id] * n_rows,
            "candidate_index": list(candidate_indices),
            "word_offset": first.tolist(),
            "n_words": n_words.tolist(),
            "n_kept": kept_list,
            "question_len": [len(q_ids)] * n_rows,
            "top_level": [c.top_level for c in cands],
            "label": labels,
            "start_word": start_words,
            "end_word": end_words,
            "input_ids": [ids[i:j] for i, j in zip(row_start.tolist(), row_end.tolist())],
            "word_positions": [positions[i:j] for i, j in zip((pos_end - kept).tolist(), pos_end.tolist())],
        }
        return cols, counts


def _word_encoder(tok):
    """A private copy of ``tok``'s Rust tokenizer, with padding and truncation off, that encodes
    a batch of words exactly as ``tok(words, add_special_tokens=False)`` does: transformers 5's
    fast tokenizers run that same ``encode_batch`` after turning padding and truncation off, then
    convert each word's encoding to Python dicts, which costs about twice the encoding itself
    (and every new word of a page pays it). None for a tokenizer class that encodes some other
    way: it is then called as usual."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    if type(tok)._encode_plus is not TokenizersBackend._encode_plus:
        return None
    encoder = copy.deepcopy(tok.backend_tokenizer)  # tok's own padding (MiniLM ships 128) stays as it is
    encoder.no_padding()
    encoder.no_truncation()
    return encoder


def _concat_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``concatenate([arange(l, h) for l, h in zip(lo, hi)])`` without a Python loop."""
    n = hi - lo
    return np.arange(int(n.sum())) + np.repeat(lo - (np.cumsum(n) - n), n)
