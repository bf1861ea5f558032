"""Stage options: generated from the stage dataclasses (tfqa.stages.options), and MLproject agrees.

MLproject is written by hand (it is what a user reads first, with its comments, and it declares
only the parameters worth naming there); these tests hold it to the dataclasses: every declared
parameter is an option of its script, passed on the command line as that option, with the
dataclass's default and a type that fits.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys

import click
import pytest
import yaml
from click.testing import CliRunner

from tfqa.core.errors import UserError
from tfqa.core.launch import LAUNCH_OPTIONS
from tfqa.features.cache import BuildConfig
from tfqa.features.featurize import FeatureConfig
from tfqa.features.selection import SelectionConfig
from tfqa.pipeline.profiles import REPO
from tfqa.stages.options import StageOptions, field_docs
from tfqa.stages.prepare import PrepareConfig
from tfqa.stages.validate import ValidateConfig, check_manifest_digest, manifest_digest
from tfqa.training.variants import VARIANTS

ENTRY_POINTS = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


@pytest.fixture(scope="module")
def scripts(monkeypatch_module):
    """Entry point script name -> its click command (importing a script runs nothing)."""
    monkeypatch_module.syspath_prepend(str(REPO / "entrypoints"))
    # A server that is not there: were importing a script to hand it over, it would try (and run on).
    monkeypatch_module.setenv("TFQA_PREFORK", "/nonexistent/tfqa-prefork.sock")
    out = {}
    for script in sorted({_script(ep["command"]) for ep in ENTRY_POINTS.values()}):
        module = importlib.import_module(script)
        out[script] = module.command() if hasattr(module, "command") else module.main
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _script(command: str) -> str:
    m = re.match(r"python entrypoints/(\w+)\.py\b", command)
    assert m, command
    return m.group(1)


def _params(command: click.Command) -> dict[str, click.Parameter]:
    """The command's options by the name ``-P`` gives them (``--max-seq-len``: ``max_seq_len``)."""
    return {opt[2:].replace("-", "_"): p for p in command.params for opt in p.opts if opt.startswith("--")}


def _declared(decl) -> tuple[str, object]:
    """(type, default) of a declared MLproject parameter; default None: required."""
    return (decl, None) if isinstance(decl, str) else (decl.get("type", "string"), decl.get("default"))


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_mlproject_passes_each_declared_parameter_as_its_option_with_the_same_default(scripts, entry_point):
    spec = ENTRY_POINTS[entry_point]
    command = " ".join(spec["command"].split())
    params = _params(scripts[_script(command)])
    declared = spec.get("parameters") or {}
    assert declared, entry_point
    for name, decl in declared.items():
        kind, default = _declared(decl)
        if name.replace("_", "-") in LAUNCH_OPTIONS:
            # Taken by the launcher (tfqa.core.launch) before the stage parses its options.
            assert f"--{name.replace('_', '-')} {{{name}}}" in command and default == "", (entry_point, name)
            continue
        assert name in params, f"{entry_point}: {name} is no option of {_script(command)}.py"
        option = params[name]
        assert f"--{name.replace('_', '-')} {{{name}}}" in command, f"{entry_point}: {name} is not passed as its option"
        numeric = isinstance(option.type, (click.types.IntParamType, click.types.FloatParamType))  # ranges too
        if kind == "float":  # how MLflow declares any number
            assert numeric, (entry_point, name, option.type)
        else:
            assert kind == "string", (entry_point, name, kind)
            assert option.type in (click.STRING, click.BOOL) or isinstance(option.type, click.Choice), (entry_point, name)
        if default is None:
            assert option.required, f"{entry_point}: {name} is required in MLproject, not in the script"
        elif default == "":
            # Empty: resolved from the settings file and upstream runs, else the option's default.
            assert not option.required
        elif name == "variant":
            # The training entry points share one script: each one's row of the variants table.
            assert VARIANTS[str(default)].entry_point == entry_point
        elif option.type is click.BOOL:
            assert str(default) == str(option.default).lower(), (entry_point, name)
        elif numeric:
            assert float(default) == option.default, (entry_point, name)
        else:
            assert str(default) == option.default, (entry_point, name, default, option.default)
    # And nothing else is passed but options of the script (with a value of their type).
    for flag, value in re.findall(r"(--[\w-]+) (\S+)", command):
        name = flag[2:].replace("-", "_")
        if flag[2:] in LAUNCH_OPTIONS:
            continue
        assert name in params, f"{entry_point}: {flag} is no option of {_script(command)}.py"
        if not value.startswith("{"):
            params[name].type.convert(value, params[name], None)


def test_a_declared_numeric_default_is_the_dataclass_one():
    prepare = ENTRY_POINTS["prepare"]["parameters"]
    features, selection = FeatureConfig(), PrepareConfig.__dataclass_fields__["build"].default_factory().selection
    assert prepare["max_seq_len"]["default"] == features.max_seq_len == 360
    assert prepare["max_question_len"]["default"] == features.max_question_len
    assert prepare["strategy"]["default"] == selection.strategy == "random"
    assert prepare["negatives"]["default"] == selection.negatives


def _stage_configs() -> dict[str, type]:
    from tfqa.stages.mine import MineConfig
    from tfqa.stages.predict import PredictConfig
    from tfqa.stages.squad import SquadStageConfig
    from tfqa.stages.train import TrainStageConfig

    return {
        "prepare": PrepareConfig,
        "finetune_squad": SquadStageConfig,
        "train": TrainStageConfig,
        "mine_hard_negatives": MineConfig,
        "validate": ValidateConfig,
        "predict": PredictConfig,
    }


def _fields(cls, instance=None, skip=()):
    """(name, default, doc) of every leaf field, nested dataclasses followed as the options do."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if instance is not None:
            default = getattr(instance, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ""
        if dataclasses.is_dataclass(default):
            yield from _fields(type(default), default, skip)
        else:
            yield f.name, default, docs.get(f.name, "")


def test_every_stage_option_carries_its_fields_default_and_docstring(scripts):
    skips = {"prepare": ("chunk_lines",), "train": ("variant",)}
    renames = {"prepare": {"scores_path": "scores"}}
    for script, cls in _stage_configs().items():
        params = _params(scripts[script])
        fields = list(_fields(cls, skip=skips.get(script, ())))
        assert len(fields) > 3, script
        for name, default, doc in fields:
            option = params[renames.get(script, {}).get(name, name)]
            assert option.default == ("" if default is None else default), (script, name)
            assert (option.help or "") == " ".join(doc.replace("``", "").split()), (script, name)
            assert option.show_default == (default not in ("", None)), (script, name)


def test_the_help_of_a_setting_is_its_docstring_and_choices_come_from_literals(scripts):
    params = _params(scripts["prepare"])
    assert params["max_seq_len"].help == "Whole input length in subwords, special tokens included."
    assert params["max_seq_len"].type is click.INT and params["max_seq_len"].default == 360
    assert list(params["html_tokens"].type.choices) == ["tfqa", "original"]
    assert list(params["strategy"].type.choices) == ["all", "random", "hard"]
    assert params["top_level_only"].type is click.BOOL
    assert "default: settings data.train" in params["input"].help and params["input"].default == ""
    v = _params(scripts["validate"])
    assert list(v["decode"].type.choices) == ["", "joint", "original"] and list(v["cascade"].type.choices) == ["", "none"]
    assert v["manifest_digest"].help.startswith("The digest of the manifest's content")
    t = _params(scripts["train"])
    assert list(t["precision"].type.choices) == ["auto", "fp32", "bf16", "fp16"]
    assert _params(scripts["finetune_squad"])["lr"].type is click.FLOAT


def test_options_build_the_nested_config_and_keep_what_they_do_not_name(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text("{}\n")
    options = StageOptions(PrepareConfig, skip=("chunk_lines",), names={"scores_path": "scores"})
    assert {"max_seq_len", "strategy", "scores", "workers"} <= options.option_names
    assert "chunk_lines" not in options.option_names and "build" not in options.option_names
    cfg = options.build({"input": str(src), "tokenizer": "/tok", "max_seq_len": 128, "scores": "", "strategy": "hard"})
    assert cfg.build == BuildConfig(FeatureConfig(max_seq_len=128), SelectionConfig("hard"), scores_path=None)
    assert cfg.cache_dir == "features"
    # Nothing named: the field's default instance, random negatives as train_bert_base trains on.
    assert options.build({"input": str(src), "tokenizer": "/tok"}).build.selection.strategy == "random"
    # The dataclass checks still run.
    with pytest.raises(ValueError, match="max_seq_len"):
        options.build({"input": str(src), "tokenizer": "/tok", "max_seq_len": 10})


def test_validate_refuses_a_manifest_whose_digest_is_not_the_one_given(tmp_path):
    manifest = tmp_path / "ensemble.yaml"
    manifest.write_text("alias: champion\n")
    digest = manifest_digest(manifest)
    check_manifest_digest(ValidateConfig(str(manifest), manifest_digest=digest))
    check_manifest_digest(ValidateConfig(str(manifest)))  # none given: not checked
    manifest.write_text("alias: challenger\n")
    with pytest.raises(UserError, match=f"not the one given as manifest_digest {digest}") as e:
        check_manifest_digest(ValidateConfig(str(manifest), manifest_digest=digest))
    assert e.value.path == str(manifest)


def test_importing_an_entry_point_hands_nothing_over_and_imports_no_stage():
    code = (
        "import sys; sys.path.insert(0, 'entrypoints'); import train, validate, prepare, promote; "
        "print(sorted(m for m in ('torch', 'mlflow', 'pandas', 'tfqa.stages.train') if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TFQA_PREFORK": "/nonexistent/tfqa-prefork.sock"},
    )
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_an_optional_number_left_empty_is_none_and_a_given_one_is_a_number():
    # MLproject passes a parameter nobody set as "": predict's threshold overrides must read it as
    # "not given" (validate's pair), and refuse what is not a number.
    from tfqa.stages.predict import PredictConfig

    options = StageOptions(PredictConfig)

    @click.command()
    @options
    def main(**values):
        click.echo(repr((options.build(values).long_threshold, options.build(values).short_threshold)))

    base = ["--validate-run", "r", "--test-data", "t.jsonl"]
    r = CliRunner().invoke(main, [*base, "--long-threshold", "", "--short-threshold", "0.25"])
    assert (r.exit_code, r.output.strip()) == (0, "(None, 0.25)")
    r = CliRunner().invoke(main, [*base, "--long-threshold", "high"])
    assert r.exit_code == 2 and "'high' is not a valid float" in r.output
