"""The ensemble manifest (``registry/*.yaml``) and the Model Registry operations on it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tfqa.inference.decode import DecodeConfig
from tfqa.modeling.saved import MODEL_ARTIFACT
from tfqa.features.tokenization import HTML_TOKEN_MODES
from tfqa.tracking.upstream import require_stage, run_logged_model, version_model_id
from tfqa.training.variants import VARIANTS

TRAINING_STAGES = frozenset(v.entry_point for v in VARIANTS.values())


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

    @classmethod
    def load(cls, path: str | Path) -> "EnsembleManifest":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ManifestError(f"{path}: not a valid ensemble manifest: cannot read it ({exc.strerror or exc})") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or str(exc)
            raise ManifestError(f"{where}: not a valid ensemble manifest: invalid YAML: {problem}") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw, source: str = "<manifest>") -> "EnsembleManifest":
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
            models.append(ManifestEntry(str(m["name"]), str(m["variant"]), str(m["backbone"]), weight))
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise fail("models", f"the registered model name {dup!r} appears twice")
        try:
            decode = DecodeConfig(int(raw.get("max_answer_words", DecodeConfig.max_answer_words)),
                                  str(raw.get("decode", DecodeConfig.decode)))
        except ValueError as exc:
            field = "decode" if "decode" in str(exc) else "max_answer_words"
            raise fail(field, str(exc)) from None
        html_tokens = str(raw.get("html_tokens", "tfqa"))
        if html_tokens not in HTML_TOKEN_MODES:
            raise fail("html_tokens", f"must be one of {', '.join(HTML_TOKEN_MODES)}, got {html_tokens!r}")
        return cls(str(raw.get("alias", "champion")), tuple(models), decode, html_tokens,
                   _parse_cascade(raw.get("cascade"), set(names), fail))

    @property
    def cascade_models(self) -> tuple[str, ...]:
        return tuple(s.model for s in self.cascade)

    def entry_for_variant(self, variant: str) -> ManifestEntry:
        for m in self.models:
            if m.variant == str(variant):
                return m
        raise LookupError(f"the manifest has no model for variant {variant!r}")

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


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str
    run_id: str
    model_id: str = ""
    """The LoggedModel the version was created from (its source is ``models:/<model_id>``)."""


def promote(run_id: str, manifest: EnsembleManifest, *, name: str | None = None, alias: str | None = None) -> Promotion:
    """Register a finished training run's model and move the alias to the new version.

    The version is created from the run's LoggedModel (source ``models:/<model_id>``). Refuses runs
    of other stages than training, runs that did not finish, whose model is missing or never
    finished uploading, or whose variant/backbone tags do not match the manifest entry the model
    is registered under.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    tags = run.data.tags
    if run.info.status != "FINISHED":
        raise ValueError(f"run {run_id} is {run.info.status}, not FINISHED: only finished runs are promoted")
    require_stage(run, TRAINING_STAGES, "training")
    variant = tags.get("tfqa.variant")
    entry = manifest.entry(name) if name else manifest.entry_for_variant(variant or "?")
    if variant != entry.variant:
        raise ValueError(f"run {run_id} trained variant {variant!r}; {entry.name} takes variant {entry.variant!r}")
    if tags.get("tfqa.backbone") != entry.backbone:
        raise ValueError(
            f"run {run_id} has backbone {tags.get('tfqa.backbone')!r}; {entry.name} expects {entry.backbone!r}"
        )
    model = run_logged_model(run_id, MODEL_ARTIFACT)
    if model is None:
        raise ValueError(f"run {run_id} logged no model (no LoggedModel '{MODEL_ARTIFACT}' from this run)")
    if str(model.status) != "READY":
        raise ValueError(f"run {run_id}'s model {model.model_id} is {model.status}, not READY: it was never fully uploaded")
    try:
        client.get_registered_model(entry.name)
    except MlflowException:
        client.create_registered_model(entry.name, tags={"tfqa.backbone": entry.backbone, "tfqa.variant": entry.variant})
    mv = client.create_model_version(
        entry.name, source=f"models:/{model.model_id}", run_id=run_id, model_id=model.model_id,
        tags={"tfqa.backbone": entry.backbone, "tfqa.variant": entry.variant},
    )
    alias = alias or manifest.alias
    client.set_registered_model_alias(entry.name, alias, mv.version)
    return Promotion(entry.name, str(mv.version), alias, run_id, model.model_id)


def model_versions(versions: dict[str, str]) -> dict[str, "object"]:
    """name -> ModelVersion for ``{name: version}`` (what a validation's ensemble report lists)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return {n: client.get_model_version(n, str(v)) for n, v in versions.items()}


def record_models_used(run, versions: dict[str, "object"]) -> None:
    """Tag the run with each registered model's version and LoggedModel id it used
    (``tfqa.model_version.<name>``, ``tfqa.model_id.<name>``) and log the models as its inputs."""
    ids = {n: version_model_id(mv) for n, mv in versions.items()}
    run.set_tags({**{f"tfqa.model_version.{n}": mv.version for n, mv in versions.items()},
                  **{f"tfqa.model_id.{n}": i for n, i in ids.items() if i}})
    run.log_inputs(model_ids=[i for i in ids.values() if i])


def resolve_aliases(manifest: EnsembleManifest, alias: str | None = None) -> dict[str, "object"]:
    """name -> ModelVersion for every manifest entry; a clear error naming model and alias."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    alias = alias or manifest.alias
    out = {}
    for m in manifest.models:
        try:
            out[m.name] = client.get_model_version_by_alias(m.name, alias)
        except MlflowException as exc:
            raise LookupError(f"registered model {m.name!r} has no version with alias {alias!r} ({exc.message})") from None
    return out
