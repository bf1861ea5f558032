"""The ensemble manifest (``registry/*.yaml``): which registered models validate and predict pull,
with what weights, decoding and cascade (the Model Registry operations on it: ``tfqa.tracking.registry``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from tfqa.features.tokenization import HTML_TOKEN_MODES
from tfqa.inference.decode import DecodeConfig


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    variant: str
    backbone: str
    weight: float


@dataclass(frozen=True)
class CascadeStage:
    """One pruning stage: ``model`` scores the candidates still alive and keeps, per example, at
    most ``top_k`` of them whose long score ``1 - p0`` is above ``threshold``."""

    model: str
    top_k: int
    threshold: float

    def prune_stage(self):
        from tfqa.inference.ensemble import PruneStage

        return PruneStage(top_k=self.top_k, min_score=self.threshold)


MANIFEST_KEYS = ("alias", "models", "decode", "max_answer_words", "html_tokens", "cascade")


class ManifestError(ValueError):
    """A manifest problem; ``str()`` names the file (and line for YAML errors) and the field."""


@dataclass(frozen=True)
class EnsembleManifest:
    """What ``validate`` and ``predict`` pull and how they combine it: registered models and
    weights, the decoding, the tag tokens the models are trained with (the pipeline passes it to
    every training stage), and the candidate-pruning cascade (empty: every candidate reaches
    every model)."""

    alias: str
    models: tuple[ManifestEntry, ...]
    decode: DecodeConfig = DecodeConfig()
    html_tokens: str = "tfqa"
    cascade: tuple[CascadeStage, ...] = ()
    source: str = ""
    """The file it was read from (named in refusals about it)."""

    @classmethod
    def load(cls, path: str | Path) -> EnsembleManifest:
        """The manifest in ``path``, checked whole: what ``validate`` and ``promote`` both read, so
        a manifest one of them accepts the other accepts too."""
        from tfqa.core import jsontext, yamlfile

        path = Path(path)
        try:
            text = jsontext.decode_utf8(path.read_bytes())
        except OSError as exc:
            raise ManifestError(f"{path}: not a valid ensemble manifest: cannot read it ({exc.strerror or exc})") from None
        except jsontext.JsonTextError as exc:
            raise ManifestError(f"{path}:{exc.line}: not a valid ensemble manifest: {exc.reason}") from None
        try:
            raw = yamlfile.loads(text)  # a key given twice is refused, naming both lines
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or str(exc)
            raise ManifestError(f"{where}: not a valid ensemble manifest: invalid YAML: {problem}") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw, source: str = "<manifest>") -> EnsembleManifest:
        def fail(field: str, reason: str) -> ManifestError:
            return ManifestError(f"{source}: not a valid ensemble manifest: field '{field}': {reason}")

        if not isinstance(raw, dict):
            raise ManifestError(f"{source}: not a valid ensemble manifest: expected a mapping with a 'models' list")
        unknown = sorted(set(raw) - set(MANIFEST_KEYS))
        if unknown:
            raise fail(unknown[0], f"unknown key (known: {', '.join(MANIFEST_KEYS)})")
        if not isinstance(raw.get("models"), list) or not raw["models"]:
            raise fail("models", "missing or not a non-empty list")
        models = []
        for k, m in enumerate(raw["models"]):
            if not isinstance(m, dict):
                raise fail(f"models[{k}]", "expected a mapping")
            for key in ("name", "variant", "backbone"):
                if key not in m:
                    raise fail(f"models[{k}].{key}", "missing")
            try:
                weight = float(m.get("weight", 1.0))
            except (TypeError, ValueError):
                raise fail(f"models[{k}].weight", f"{m.get('weight')!r} is not a number") from None
            if not math.isfinite(weight) or weight < 0:
                raise fail(f"models[{k}].weight", f"must be a finite number >= 0, got {m.get('weight')!r}")
            models.append(ManifestEntry(str(m["name"]), str(m["variant"]), str(m["backbone"]), weight))
        if not any(m.weight > 0 for m in models):
            raise fail("models", "every weight is 0: at least one model must carry weight")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise fail("models", f"the registered model name {dup!r} appears twice")
        try:
            decode = DecodeConfig(
                int(raw.get("max_answer_words", DecodeConfig.max_answer_words)), str(raw.get("decode", DecodeConfig.decode))
            )
        except ValueError as exc:
            field = "decode" if "decode" in str(exc) else "max_answer_words"
            raise fail(field, str(exc)) from None
        html_tokens = str(raw.get("html_tokens", "tfqa"))
        if html_tokens not in HTML_TOKEN_MODES:
            raise fail("html_tokens", f"must be one of {', '.join(HTML_TOKEN_MODES)}, got {html_tokens!r}")
        return cls(
            str(raw.get("alias", "champion")),
            tuple(models),
            decode,
            html_tokens,
            _parse_cascade(raw.get("cascade"), set(names), fail),
            source,
        )

    def check_registered(self, entry: ManifestEntry, tags: dict, what: str) -> None:
        """Refuse a registered model (or version) whose variant/backbone tags say another model
        than ``entry`` does, naming both; a tag it lacks is not checked."""
        variant, backbone = tags.get("tfqa.variant"), tags.get("tfqa.backbone")
        if (variant is None or variant == entry.variant) and (backbone is None or backbone == entry.backbone):
            return
        k = self.models.index(entry)
        raise ManifestError(
            f"{self.source or '<manifest>'}: field 'models[{k}]': {entry.name} is variant {entry.variant!r} on "
            f"{entry.backbone!r} here, but {what} is variant {variant!r} on {backbone!r}"
        )

    def entry_for_variant(self, variant: str) -> ManifestEntry:
        for m in self.models:
            if m.variant == str(variant):
                return m
        raise LookupError(f"the manifest has no model for variant {variant!r}")

    def entry_for_run(self, variant: str, backbone: str | None = None, registered_model: str | None = None) -> ManifestEntry:
        """The entry a training run is promoted under when no name is given: the one named by the
        run's registered model (``-P registered_model=``), else the one of its variant and
        backbone, else the first of its variant (whose backbone check then names the mismatch).
        So a sixth model, a variant row trained again on another backbone (``-P backbone_name=``),
        finds its own entry beside the original one of that variant."""
        named = [m for m in self.models if m.name == registered_model and m.variant == str(variant)]
        same = [m for m in self.models if m.variant == str(variant) and m.backbone == backbone]
        return (named or same or [self.entry_for_variant(variant)])[0]

    def entry(self, name: str) -> ManifestEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise LookupError(f"the manifest has no registered model named {name!r}")


def _parse_cascade(raw, names: set[str], fail) -> tuple[CascadeStage, ...]:
    """``none`` (or absent) for no cascade, else a list of {model, top_k, threshold}."""
    if raw is None or raw == "none" or raw == []:
        return ()
    if not isinstance(raw, list):
        raise fail("cascade", f"expected a list of stages or 'none', got {raw!r}")
    stages = []
    for k, st in enumerate(raw):
        field = f"cascade[{k}]"
        if not isinstance(st, dict):
            raise fail(field, "expected a mapping with model, top_k, threshold")
        extra = sorted(set(st) - {"model", "top_k", "threshold"})
        if extra:
            raise fail(f"{field}.{extra[0]}", "unknown key (known: model, top_k, threshold)")
        for key in ("model", "top_k", "threshold"):
            if key not in st:
                raise fail(f"{field}.{key}", "missing")
        model = str(st["model"])
        if model not in names:
            raise fail(f"{field}.model", f"{model!r} is not one of the manifest's models ({', '.join(sorted(names))})")
        top_k, threshold = st["top_k"], st["threshold"]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise fail(f"{field}.top_k", f"must be an integer >= 1, got {top_k!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise fail(f"{field}.threshold", f"must be a number in [0, 1], got {threshold!r}")
        stages.append(CascadeStage(model, top_k, float(threshold)))
    return tuple(stages)
