"""Candidate features: one model input per (question, long-answer candidate).

``[CLS] question [SEP] candidate [SEP]``, the question cut to ``max_question_len`` subwords and the
candidate's tail words dropped so the whole fits in ``max_seq_len``. Each word is tokenised on
its own (exactly what a per-word ``tokenizer.tokenize`` loop gives), so a candidate's subwords are a
contiguous slice of the document's concatenated word pieces: nested candidates share the work, and
every kept word records the position of its first subword. Start/end predictions are read at those
positions, which is what lets models with different tokenizers be averaged per word.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import chain

import numpy as np

from tfqa.labels import candidate_labels
from tfqa.records import AnswerClass, Example
from tfqa.tokenization import HtmlTokens, check_html_tokens


@dataclass(frozen=True)
class FeatureConfig:
    max_seq_len: int = 360
    """Whole input length in subwords, special tokens included."""
    max_question_len: int = 64
    """Question length in subwords; longer questions lose their tail."""
    html_tokens: str = "tfqa"
    """Which token a tag word becomes: ``original`` (the 1st place's: nine opening tags get added
    tokens, every other tag ``<``, or ``qw99`` on SentencePiece tokenizers) or ``tfqa`` (closing
    tags share their opening tag's token, other tags one ``<Tag>``). See ``tfqa.tokenization``."""

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

    def add(self, other: "FeatureCounts") -> None:
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


# Column order of a feature table; ``tfqa.feature_cache`` gives it an Arrow schema.
FEATURE_COLUMNS = (
    "example_id", "candidate_index", "word_offset", "n_words", "n_kept", "question_len",
    "top_level", "label", "start_word", "end_word", "input_ids", "word_positions",
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
                encoded = self.tok(text, add_special_tokens=False)["input_ids"]
                for w, ids in zip(text, encoded):
                    # A word made only of characters the tokenizer drops (zero-width space, control
                    # characters) still needs a position for its start/end probability.
                    cache[w] = tuple(ids) if ids else (self.unk_id,)
        return list(map(cache.__getitem__, words))

    def _piece_ids(self, ex: Example, word_idx: list[int]) -> list[tuple[int, ...]]:
        """Subword ids of the words ``word_idx`` of ``ex``, a tag word's being its one tag id."""
        words = ex.words
        pieces = self._word_ids([words[i] for i in word_idx])
        if not self._tags_by_spelling:
            is_html, tags = ex.is_html, self._tag_cache
            for k, i in enumerate(word_idx):
                if is_html[i]:
                    w = words[i]
                    tag = tags.get(w)
                    if tag is None:
                        tag = tags[w] = (self._html.id_for(w),)
                    pieces[k] = tag
        return pieces

    def question_ids(self, question: str) -> list[int]:
        ids = self.tok(question, add_special_tokens=False)["input_ids"]
        return ids[: self.cfg.max_question_len]

    # -- features -------------------------------------------------------------------------------
    def featurize(self, ex: Example, candidate_indices: list[int]) -> tuple[dict[str, list], FeatureCounts]:
        """Feature columns for the chosen candidates of one example, with their counts."""
        cfg = self.cfg
        q_ids = self.question_ids(ex.question)
        prefix = np.array([self.cls_id, *q_ids, self.sep_id], dtype=np.int32)
        sep = prefix[-1:]
        budget = cfg.max_seq_len - len(prefix) - 1
        n_doc = len(ex.words)
        cands = [ex.candidates[ci] for ci in candidate_indices]
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
        label_of = candidate_labels(ex)
        cols: dict[str, list] = {k: [] for k in FEATURE_COLUMNS}
        counts = FeatureCounts(examples=1)
        for ci, c, n_kept in zip(candidate_indices, cands, kept.tolist()):
            s, e = c.start_token, c.end_token
            a, b = starts[s], starts[s + n_kept]
            ids = np.concatenate((prefix, flat[a:b], sep))
            positions = starts[s : s + n_kept] - (a - len(prefix))

            label, start_w, end_w = AnswerClass.NOT_ANSWER, -1, -1
            gold = label_of.get(ci)
            if gold is not None:
                label = gold.label
                if label == AnswerClass.SHORT:
                    # The end label is the span's last word (inclusive), which is what decoding
                    # reads the end head as (``tfqa.decode``).
                    start_w = min(sp.start_token for sp in gold.spans) - s
                    end_w = max(sp.end_token for sp in gold.spans) - 1 - s
                    if not (0 <= start_w <= end_w < n_kept):
                        label, start_w, end_w = AnswerClass.LONG, -1, -1
                        counts.truncated_spans += 1
            counts.candidates += 1
            counts.by_class[label] += 1
            counts.truncated_candidates += int(n_kept < e - s)

            cols["example_id"].append(ex.example_id)
            cols["candidate_index"].append(ci)
            cols["word_offset"].append(s)
            cols["n_words"].append(e - s)
            cols["n_kept"].append(n_kept)
            cols["question_len"].append(len(q_ids))
            cols["top_level"].append(c.top_level)
            cols["label"].append(int(label))
            cols["start_word"].append(start_w)
            cols["end_word"].append(end_w)
            cols["input_ids"].append(ids)
            cols["word_positions"].append(positions)
        return cols, counts
