"""MLflow entry point `pipeline`: every stage in order, reusing finished runs (see tfqa.pipeline)."""
import sys

from tfqa.demo import main

if __name__ == "__main__":
    main(args=sys.argv[1:])
