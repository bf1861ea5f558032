"""The pipeline's plan: stage order and how each step's parameters name its upstream runs."""

from tfqa.pipeline.profiles import BACKBONE_STAGES, REPO, Profile
from tfqa.pipeline.steps import PipelineResult, StepResult, build_steps


def _profile() -> Profile:
    return Profile(
        name="t",
        work_dir="/tmp/w",
        manifest=str(REPO / "registry" / "demo.yaml"),
        backbones=dict.fromkeys(BACKBONE_STAGES, "/b"),
        backbone_name="all-MiniLM-L6-v2",
        train_overrides={"max_steps": "5", "max_seq_len": "96"},
    )


def test_steps_follow_the_original_order_and_wire_upstream_runs():
    data = {"train": "/d/train.jsonl", "dev": "/d/dev.jsonl.gz", "test": "/d/test.jsonl", "squad": "/d/squad.json"}
    steps = build_steps(_profile(), data)
    names = [n for n, _, _ in steps]
    assert names == [
        "prepare",
        "train_bert_base",
        "mine_hard_negatives",
        "train_1",
        "finetune_squad",
        "train_2",
        "train_3",
        "train_4",
        "train_5",
        "promote_1",
        "promote_2",
        "promote_3",
        "promote_4",
        "promote_5",
        "validate",
        "predict",
    ]
    result = PipelineResult()
    params = {}
    for name, entry_point, make in steps:
        params[name] = make(result)
        result.steps.append(StepResult(name, f"run-{name}", False, 0.0))
    assert params["prepare"]["max_seq_len"] == "96" and params["prepare"]["strategy"] == "random"
    assert params["train_bert_base"]["train_data"] == "run-prepare"
    assert params["mine_hard_negatives"]["model"] == "run-train_bert_base"
    assert params["train_1"]["mining_run"] == "run-mine_hard_negatives" and params["train_1"]["variant"] == "1"
    assert (
        params["train_2"]["init_model"] == "run-finetune_squad" and params["train_2"]["mining_run"] == "run-mine_hard_negatives"
    )
    assert params["train_3"]["init_model"] == "run-finetune_squad"
    assert "init_model" not in params["train_4"]
    # Every variant after mining samples mined negatives; bert_base comes before it.
    assert all(params[f"train_{k}"]["mining_run"] == "run-mine_hard_negatives" for k in "12345")
    assert "mining_run" not in params["train_bert_base"]
    assert all(params[f"train_{k}"]["backbone_name"] == "all-MiniLM-L6-v2" for k in "12345")
    assert params["promote_3"]["run_id"] == "run-train_3"
    # A new model version behind an alias must not reuse an old validation: promotions are keyed.
    assert params["validate"]["promotions"] == ",".join(f"run-promote_{k}" for k in "12345")
    assert params["predict"]["validate_run"] == "run-validate"


def test_warm_start_and_step_overrides():
    """The demo's wiring: later models start from the bert_base run; per-step settings win."""
    profile = Profile(**{**_profile().__dict__, "warm_start": True, "step_overrides": {"train_bert_base": {"max_steps": "250"}}})
    result, params = PipelineResult(), {}
    for name, _, make in build_steps(profile, {"train": "t", "dev": "d", "squad": "s"}):
        params[name] = make(result)
        result.steps.append(StepResult(name, f"run-{name}", False, 0.0))
    assert params["train_bert_base"]["max_steps"] == "250" and params["train_1"]["max_steps"] == "5"
    assert "init_model" not in params["train_bert_base"]
    for step in ("finetune_squad", "train_1", "train_4", "train_5"):
        assert params[step]["init_model"] == "run-train_bert_base", step
    assert params["train_2"]["init_model"] == params["train_3"]["init_model"] == "run-finetune_squad"


def test_a_failing_step_names_itself_its_run_and_the_recorded_error(mlflow_tracking, tmp_path, monkeypatch):
    """Through a real `mlflow run` of the prepare entry point on a file whose first line is not JSON."""
    import os
    import sys
    from pathlib import Path

    import pytest
    from mlflow.tracking import MlflowClient

    from tfqa.pipeline.steps import StepFailed, run_step

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    experiment = os.environ["MLFLOW_EXPERIMENT_NAME"]
    MlflowClient().create_experiment(experiment)
    from tfqa.pipeline.profiles import minilm_dir

    bad = tmp_path / "train.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(StepFailed) as info:
        run_step(
            "prepare",
            "prepare",
            {"input": bad, "tokenizer": minilm_dir(), "cache_dir": tmp_path / "features"},
            experiment=experiment,
            code_version="test",
            log=lambda _: None,
            force=True,
        )
    e = info.value
    assert e.step == "prepare" and e.run_id and MlflowClient().get_run(e.run_id).info.status == "FAILED"
    assert f"{bad}:1" in str(e) and "run the same command again" in str(e), str(e)
