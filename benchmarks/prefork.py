"""Stage start-up: a fresh `python entrypoints/<stage>.py` against the same script handed to the
prefork server (tfqa.pipeline.prefork), which already imported torch, transformers and MLflow.

Each run goes until the stage's own code has imported what it needs (``--probe``: the modules
every stage imports, then exit), so the figure is the start-up a pipeline stage pays.

    python benchmarks/prefork.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = """from tfqa.pipeline.prefork import delegate_if_configured
delegate_if_configured()
import torch, transformers, mlflow, pandas, pyarrow, click
import tfqa.tracking, tfqa.stages.train, tfqa.stages.validate
"""


def timed(script: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(script)], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from tfqa.pipeline import prefork

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "stage.py"
        script.write_text(PROBE)
        env = {k: v for k, v in os.environ.items() if k != prefork.ENV}
        fresh = [timed(script, env) for _ in range(args.runs)]
        with prefork.server() as path:
            env_pf = {**env, prefork.ENV: path}
            timed(script, env_pf)  # the first one waits for the server's own imports
            forked = [timed(script, env_pf) for _ in range(args.runs)]
    print(f"fresh process: median {statistics.median(fresh):.2f} s over {args.runs} runs")
    print(
        f"prefork server: median {statistics.median(forked):.2f} s over {args.runs} runs "
        f"({statistics.median(fresh) / statistics.median(forked):.0f}x less start-up per stage)"
    )


if __name__ == "__main__":
    main()
