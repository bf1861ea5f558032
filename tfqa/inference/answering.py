"""Answer a question about one document with a trained model: what the served model does.

The document is NQ-style text (HTML tags as space-separated tokens, as in Kaggle's
``document_text``); its long-answer candidates are taken from the input when given, else found
from the HTML structure. The steps are the pipeline's own: candidates -> features -> model ->
word-level outputs -> decoding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tfqa.data.candidates import find_candidates
from tfqa.data.readers import is_html_word
from tfqa.data.records import Candidate, Example
from tfqa.features.featurize import CandidateFeaturizer
from tfqa.inference import decode as dec
from tfqa.modeling.saved import read_decode_config, read_feature_config, read_top_level_only


@dataclass
class Answer:
    long_answer: str = ""
    long_answer_start: int = -1
    long_answer_end: int = -1
    long_answer_score: float = 0.0
    short_answer: str = ""
    short_answer_start: int = -1
    short_answer_end: int = -1
    short_answer_score: float = 0.0
    yes_no_answer: str = "NONE"


def _text(words: list[str], is_html: list[bool], start: int, end: int) -> str:
    return " ".join(w for w, h in zip(words[start:end], is_html[start:end]) if not h)


class Answerer:
    def __init__(self, model_dir: str | Path):
        from tfqa.features.tokenization import load_tokenizer
        from tfqa.modeling.model import CandidateQAModel

        model_dir = Path(model_dir)
        self.model = CandidateQAModel.from_pretrained(model_dir).eval()
        self.tok = load_tokenizer(model_dir)
        self.cfg = read_feature_config(model_dir)
        self.top_level_only = read_top_level_only(model_dir)
        self.decode = read_decode_config(model_dir)
        self.featurizer = CandidateFeaturizer(self.tok, self.cfg)

    def answer(self, question: str, document_text: str, candidates: list[dict] | None = None) -> Answer:
        from tfqa.features.dataset import InMemoryFeatures
        from tfqa.features.tokenization import pad_id_of
        from tfqa.inference.batch_scoring import score_candidates

        words = document_text.split(" ")
        is_html = [is_html_word(w) for w in words]
        cands = (
            [Candidate(int(c["start_token"]), int(c["end_token"]), bool(c.get("top_level", True))) for c in candidates]
            if candidates
            else find_candidates(words)
        )
        cands = [c for c in cands if 0 <= c.start_token < c.end_token <= len(words)]
        if not cands:
            return Answer()
        ex = Example("0", question, words, is_html, cands)
        cols, _ = self.featurizer.featurize(ex, list(range(len(cands))))
        outputs = score_candidates(
            self.model,
            InMemoryFeatures(cols, self.cfg.max_seq_len),
            pad_id=pad_id_of(self.tok),
            device="cpu",
            top_level_only=self.top_level_only,
        )
        [p] = dec.decode(outputs, dec.candidate_spans([ex]), self.decode, example_ids=["0"])
        out = Answer(long_answer_score=float(p.long_score), short_answer_score=float(p.short_score), yes_no_answer=p.yes_no)
        if p.has_long:
            out.long_answer = _text(words, is_html, p.long_start_token, p.long_end_token)
            out.long_answer_start, out.long_answer_end = p.long_start_token, p.long_end_token
        if p.yes_no != "NONE":
            out.short_answer = p.yes_no
        elif p.has_short:
            out.short_answer = _text(words, is_html, p.short_start_token, p.short_end_token)
            out.short_answer_start, out.short_answer_end = p.short_start_token, p.short_end_token
        return out

    def answer_frame(self, frame):
        """Rows of ``question_text``, ``document_text`` (and optional ``long_answer_candidates``)."""
        import pandas as pd

        missing = {"question_text", "document_text"} - set(frame.columns)
        if missing:
            raise ValueError(f"input lacks columns {sorted(missing)}; expected question_text, document_text")
        rows = []
        for rec in frame.to_dict("records"):
            cands = rec.get("long_answer_candidates")
            if isinstance(cands, str):
                cands = json.loads(cands)
            rows.append(asdict(self.answer(str(rec["question_text"]), str(rec["document_text"]), cands or None)))
        return pd.DataFrame(rows, columns=list(Answer.__dataclass_fields__))
