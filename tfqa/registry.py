"""The ensemble manifest (``registry/*.yaml``) and the Model Registry operations on it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tfqa.model_logging import MODEL_ARTIFACT


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    variant: str
    backbone: str
    weight: float


@dataclass(frozen=True)
class EnsembleManifest:
    alias: str
    models: tuple[ManifestEntry, ...]

    @classmethod
    def load(cls, path: str | Path) -> "EnsembleManifest":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
            models = tuple(
                ManifestEntry(str(m["name"]), str(m["variant"]), str(m["backbone"]), float(m.get("weight", 1.0)))
                for m in raw["models"]
            )
            manifest = cls(str(raw.get("alias", "champion")), models)
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: not a valid ensemble manifest ({exc!r})") from None
        if len({m.name for m in models}) != len(models):
            raise ValueError(f"{path}: a registered model name appears twice")
        return manifest

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


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str
    run_id: str


def promote(run_id: str, manifest: EnsembleManifest, *, name: str | None = None, alias: str | None = None) -> Promotion:
    """Register a finished training run's model and move the alias to the new version.

    Refuses runs that did not finish, that logged no model, or whose variant/backbone tags do
    not match the manifest entry the model is registered under.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    tags = run.data.tags
    if run.info.status != "FINISHED":
        raise ValueError(f"run {run_id} is {run.info.status}, not FINISHED: only finished runs are promoted")
    variant = tags.get("tfqa.variant")
    entry = manifest.entry(name) if name else manifest.entry_for_variant(variant or "?")
    if variant != entry.variant:
        raise ValueError(f"run {run_id} trained variant {variant!r}; {entry.name} takes variant {entry.variant!r}")
    if tags.get("tfqa.backbone") != entry.backbone:
        raise ValueError(
            f"run {run_id} has backbone {tags.get('tfqa.backbone')!r}; {entry.name} expects {entry.backbone!r}"
        )
    names = {a.path for a in client.list_artifacts(run_id)}
    if MODEL_ARTIFACT not in names:
        raise ValueError(f"run {run_id} logged no '{MODEL_ARTIFACT}' artifact")
    try:
        client.get_registered_model(entry.name)
    except MlflowException:
        client.create_registered_model(entry.name, tags={"tfqa.backbone": entry.backbone, "tfqa.variant": entry.variant})
    mv = client.create_model_version(
        entry.name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id,
        tags={"tfqa.backbone": entry.backbone, "tfqa.variant": entry.variant},
    )
    alias = alias or manifest.alias
    client.set_registered_model_alias(entry.name, alias, mv.version)
    return Promotion(entry.name, str(mv.version), alias, run_id)


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
