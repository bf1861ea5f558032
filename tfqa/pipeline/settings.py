"""The settings file a user keeps: what ``mlflow run . -e <stage>`` takes for parameters left empty.

``tfqa.yaml`` beside ``MLproject``, or the file ``$TFQA_CONFIG`` names (``TFQA_CONFIG=`` set
empty: no settings file at all)::

    tracking:                        # defaults for MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME
      uri: http://tracking-host:5000
      experiment: tfqa
    backbones:                       # backbone directory by backbone name (tfqa/training/variants.py's names)
      albert-xxlarge-v2: /models/albert-xxlarge-v2
    data:                            # train, dev, test, squad, squad_dev
      train: /data/simplified-nq-train.jsonl
    parameters:                      # -P defaults by entry point; `train`: the four training ones
      train: {eval_every: 2000}
      train_albert: {batch_size: 16}

Relative paths are relative to the file. Every path must exist and every key must be known
when the file is read; an error names the file, the key and the path (YAML errors: line and
column; a key given twice: both lines). A parameter value the stage's option cannot take (not a
number, out of its range) is refused naming the file and the key when the stage starts.
What a stage does with these values is ``tfqa.pipeline.resolve``'s business.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfqa.core.errors import UserError
from tfqa.pipeline.profiles import REPO

CONFIG_ENV = "TFQA_CONFIG"
FILE_NAME = "tfqa.yaml"
TRACKING_KEYS = ("uri", "experiment")
DATA_KEYS = ("train", "dev", "test", "squad", "squad_dev")
TRAINING_ENTRY_POINTS = ("train_bert_base", "train_bert", "train_albert", "train_bert_large")
TRAINING_GROUP = "train"
"""A ``parameters`` section that applies to every training entry point (theirs win over it)."""


def default_path() -> Path:
    """Where a user keeps the file: beside MLproject."""
    return REPO / FILE_NAME


def settings_path() -> Path | None:
    """The settings file in force, or None when there is none."""
    named = os.environ.get(CONFIG_ENV)
    if named is not None:
        if not named.strip():
            return None
        path = Path(named).expanduser()
        if not path.is_file():
            raise UserError(f"no such settings file ({CONFIG_ENV} names it)", path)
        return path.resolve()
    path = default_path()
    return path if path.is_file() else None


def mlproject_parameters(mlproject: Path = REPO / "MLproject") -> dict[str, dict[str, Any]]:
    """Declared parameters by entry point: name -> its default (None: required)."""
    import yaml

    spec = yaml.safe_load(mlproject.read_text()) or {}
    out: dict[str, dict[str, Any]] = {}
    for name, entry in (spec.get("entry_points") or {}).items():
        params = {}
        for key, decl in ((entry or {}).get("parameters") or {}).items():
            params[key] = decl.get("default") if isinstance(decl, dict) else None
        out[name] = params
    return out


@dataclass(frozen=True)
class Settings:
    path: Path | None = None
    """The file these came from (None: no settings file)."""
    tracking_uri: str = ""
    experiment: str = ""
    backbones: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Settings:
        """The settings in force (``settings_path()``), or those of ``path``; empty without a file."""
        path = Path(path) if path is not None else settings_path()
        if path is None:
            return cls()
        from tfqa.core.yamlfile import load_file

        raw = load_file(path, "settings file")  # UTF-8 (a BOM accepted), a key given twice refused
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Any, path: Path) -> Settings:
        path = Path(path).resolve()
        base = path.parent

        def fail(key: str, reason: str) -> UserError:
            return UserError(reason, path, field=key)

        if raw is None:
            return cls(path=path)
        if not isinstance(raw, dict):
            raise UserError(f"expected a mapping with keys tracking, backbones, data, parameters, not {type(raw).__name__}", path)
        known = ("tracking", "backbones", "data", "parameters")
        for key in raw:
            if key not in known:
                raise fail(str(key), f"unknown key (known: {', '.join(known)})")

        def section(name: str) -> dict:
            value = raw.get(name) or {}
            if not isinstance(value, dict):
                raise fail(name, f"expected a mapping, not {type(value).__name__}")
            return value

        def text(key: str, value: Any) -> str:
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, (str, int, float)):
                return str(value)
            raise fail(key, f"expected a single value, not {type(value).__name__}")

        def existing(key: str, value: Any, kind: str) -> str:
            p = Path(text(key, value)).expanduser()
            p = (base / p) if not p.is_absolute() else p
            ok = p.is_dir() if kind == "directory" else p.exists()
            if not ok:
                raise fail(key, f"no such {kind}: {p}")
            return str(p.resolve())

        tracking = section("tracking")
        for key in tracking:
            if key not in TRACKING_KEYS:
                raise fail(f"tracking.{key}", f"unknown key (known: {', '.join(TRACKING_KEYS)})")
        uri = text("tracking.uri", tracking["uri"]) if tracking.get("uri") is not None else ""
        if uri.startswith("sqlite:///") and not os.path.isabs(uri[len("sqlite:///") :]):
            uri = f"sqlite:///{(base / uri[len('sqlite:///') :]).resolve()}"
        experiment = text("tracking.experiment", tracking["experiment"]) if tracking.get("experiment") is not None else ""

        backbones = {str(name): existing(f"backbones.{name}", value, "directory") for name, value in section("backbones").items()}
        data = {}
        for key, value in section("data").items():
            if key not in DATA_KEYS:
                raise fail(f"data.{key}", f"unknown key (known: {', '.join(DATA_KEYS)})")
            data[key] = existing(f"data.{key}", value, "file or directory")

        declared = mlproject_parameters()
        parameters: dict[str, dict[str, str]] = {}
        for entry_point, values in section("parameters").items():
            where = f"parameters.{entry_point}"
            if entry_point != TRAINING_GROUP and entry_point not in declared:
                raise fail(where, f"no such entry point in MLproject (known: {TRAINING_GROUP}, {', '.join(sorted(declared))})")
            if not isinstance(values, dict):
                raise fail(where, f"expected a mapping of parameter: value, not {type(values).__name__}")
            fixed = _fixed_parameters(declared, entry_point)
            for key, value in values.items():
                if key in fixed:
                    raise fail(
                        f"{where}.{key}",
                        f"MLproject gives {key} the default {fixed[key]!r}, so a settings value "
                        f"would never be used: give it with -P {key}=...",
                    )
            parameters[str(entry_point)] = {str(k): text(f"{where}.{k}", v) for k, v in values.items()}
        return cls(path=path, tracking_uri=uri, experiment=experiment, backbones=backbones, data=data, parameters=parameters)

    # -------------------------------------------------------------------------------- lookups
    def where(self, key: str) -> str:
        """How a message names a settings key: ``settings key data.train in /repo/tfqa.yaml``."""
        if self.path is None:
            where = f"{default_path()} (none there)" if os.environ.get(CONFIG_ENV) is None else f"${CONFIG_ENV} (turned off)"
            return f"settings key {key} in {where}"
        return f"settings key {key} in {self.path}"

    def source(self, key: str) -> str:
        """Where a value came from, for a resolution: ``/repo/tfqa.yaml: data.train``."""
        return f"{self.path}: {key}"

    def parameters_for(self, entry_point: str) -> dict[str, tuple[str, str]]:
        """``-P`` defaults for ``entry_point``: key -> (value, settings key); its own section wins
        over the ``train`` group's."""
        out: dict[str, tuple[str, str]] = {}
        groups = ([TRAINING_GROUP] if entry_point in TRAINING_ENTRY_POINTS else []) + [entry_point]
        for group in groups:
            for key, value in self.parameters.get(group, {}).items():
                out[key] = (value, f"parameters.{group}.{key}")
        return out


def _fixed_parameters(declared: Mapping[str, Mapping[str, Any]], entry_point: str) -> dict[str, Any]:
    """Parameters MLproject always passes with a value (declared with a non-empty default):
    a settings value for them would be silently ignored."""
    names = TRAINING_ENTRY_POINTS if entry_point == TRAINING_GROUP else (entry_point,)
    fixed: dict[str, Any] = {}
    for name in names:
        for key, default in declared.get(name, {}).items():
            if default not in (None, ""):
                fixed[key] = default
    return fixed


def write(path: Path, settings: Mapping[str, Any], header: str) -> None:
    """Write a settings file atomically, ``header`` (comment lines) first."""
    import yaml

    from tfqa.core.destinations import write_text_whole

    body = yaml.safe_dump(dict(settings), default_flow_style=False, sort_keys=False)
    write_text_whole(path, header.rstrip("\n") + "\n" + body)


def use_tracking_defaults(settings: Settings) -> None:
    """``tracking.uri`` / ``tracking.experiment`` become ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_EXPERIMENT_NAME`` for this process where nothing set them: neither the user's
    environment nor ``mlflow run``, which has made the run already (and says where)."""
    if settings.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    if settings.experiment and not any(
        os.environ.get(k) for k in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")
    ):
        os.environ["MLFLOW_EXPERIMENT_NAME"] = settings.experiment


def same_store(a: str, b: str) -> bool:
    """Whether two tracking URIs name one store (relative sqlite paths taken from the cwd)."""

    def norm(uri: str) -> str:
        uri = uri.strip().rstrip("/")
        if uri.startswith("sqlite:///"):
            return "sqlite:///" + os.path.realpath(uri[len("sqlite:///") :])
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        return os.path.realpath(uri) if uri.startswith(("/", ".")) else uri

    return norm(a) == norm(b)
