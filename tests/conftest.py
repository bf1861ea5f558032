"""Shared test setup: a quiet, offline, single-threaded environment and a real MLflow server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tfqa.core.servers import ServerProcess, free_port

# Set before any test module imports transformers/torch: they read these once. setdefault so a
# caller (scripts/test.sh, a developer) can still choose otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a bad local path otherwise costs ~24 s of hub retries
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No settings file (tfqa.pipeline.settings): a tfqa.yaml the demo wrote beside MLproject must not change
# what the entry points under test resolve. Tests of the settings file set their own.
os.environ.setdefault("TFQA_CONFIG", "")
# Two cores shared by several test processes: one intra-op thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that take minutes (run with -m slow)")


@dataclass
class MlflowServer:
    """A real ``mlflow server`` (sqlite backend, artifacts served over HTTP) that tests can stop
    and start again on the same port and database, to play a tracking server going away."""

    root: Path
    port: int = field(default_factory=free_port)
    start_timeout_s: float = 90.0
    _server: ServerProcess | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def start(self) -> None:
        if self.running:
            return
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
        cmd += ["--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port)]
        self._server = ServerProcess(
            [*cmd, "--workers", "1"], self.uri, self.log_path, cwd=self.root, start_timeout_s=self.start_timeout_s
        ).start()

    def stop(self) -> None:
        """Ends the server's whole process group and waits until its port is free again."""
        if self._server is not None:
            self._server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One real tracking server for the session; tests that stop it must start it again."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_tracking(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points MLflow at the session server with a fresh experiment for this test; returns the URI."""
    if not mlflow_server.running:  # an earlier test stopped it and failed before restarting
        mlflow_server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"test-{uuid.uuid4().hex[:12]}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    return mlflow_server.uri


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny-model tests: they gain nothing from threads, and on a shared 2-core
    machine OpenMP threads that spin-wait for a busy core made 40 tiny steps take 30 s, not 0.7 s."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_tmpfs(tmp_path):
    """``mount(kib)``: a real tmpfs of ``kib`` KiB (a device that fills up), unmounted afterwards.
    Mounting needs root (CI and these machines run tests as root)."""
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


@dataclass
class FamilyBackbones:
    """One tiny backbone folder per tokenizer family (``backbone_assets``), tokenizers trained on
    the real lines ``examples``."""

    dirs: dict[str, Path]
    examples: list


@pytest.fixture(scope="session")
def family_backbones(tmp_path_factory: pytest.TempPathFactory) -> FamilyBackbones:
    from tfqa.data.readers import read_examples

    import backbone_assets as ba
    import nq_builders as nb

    examples = list(read_examples(nb.HEAD10)) + list(read_examples(nb.FARM))
    root = tmp_path_factory.mktemp("families")
    return FamilyBackbones({f: ba.write_family(f, root / f, examples) for f in ba.FAMILIES}, examples)


def stage_env(tracking_uri: str, experiment: str) -> dict[str, str]:
    """The environment the end-to-end tests start entry points in: this session's tracking server
    and an experiment of the test's own, offline, one thread, this venv's python first on PATH
    (what `mlflow run --env-manager local` runs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env.update(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_EXPERIMENT_NAME": experiment,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


SMALL_PAGES = dict(min_candidates=8, max_candidates=14, min_tokens=150, max_tokens=400)
"""Generated pages short enough for the 64-subword models of the backbone-family tests."""


def small_page_nq_files(root: Path, n_train: int, n_dev: int) -> tuple[Path, Path]:
    """Original-format files of ``SMALL_PAGES`` pages: ``n_train`` training examples (seed 1) and
    ``n_dev`` dev examples with 5 annotations each (seed 2)."""
    from tfqa.data.synth import SynthConfig, write_original

    train_file, dev_file = root / "train.jsonl", root / "dev.jsonl"
    write_original(train_file, SynthConfig(n_examples=n_train, seed=1, **SMALL_PAGES))
    write_original(dev_file, SynthConfig(n_examples=n_dev, seed=2, n_annotations=5, **SMALL_PAGES))
    return train_file, dev_file


def tiny_nq_files(root: Path) -> tuple[Path, Path]:
    """The end-to-end tests' data: 40 generated Kaggle-simplified training examples and 10
    original-format dev examples with 5 annotations each."""
    from tfqa.data.synth import SynthConfig, write_original, write_simplified

    train_file, dev_file = root / "train.jsonl", root / "dev.jsonl.gz"
    write_simplified(train_file, SynthConfig(n_examples=40, seed=3))
    write_original(dev_file, SynthConfig(n_examples=10, seed=4, n_annotations=5))
    return train_file, dev_file
