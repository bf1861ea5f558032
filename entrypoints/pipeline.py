"""MLflow entry point `pipeline`: every stage in order, reusing finished runs (see tfqa.pipeline.steps)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's code (see _args.py)

from tfqa.pipeline.demo import main  # noqa: E402

if __name__ == "__main__":
    main(args=sys.argv[1:])
