"""Command-line plumbing shared by the entry point scripts, which import it before anything heavy."""
import sys

from tfqa.errors import RefusingCommand
from tfqa.prefork import delegate_if_configured

# Under the pipeline, the stage runs in its prefork server (libraries already imported) and this
# process only waits for its exit status.
delegate_if_configured()


class StageCommand(RefusingCommand):
    """An entry point: a refusal is one line (tfqa.errors) and is recorded on the MLflow run that
    `mlflow run` made for it, also when it came before the stage re-attached to that run."""

    def on_refusal(self, exc: BaseException) -> None:
        from tfqa.tracking import record_failure

        record_failure(exc)


def normalised_argv(argv=None) -> list[str]:
    """MLflow passes undeclared `-P some_key=v` as `--some_key v`; click options use dashes."""
    out = []
    for tok in sys.argv[1:] if argv is None else argv:
        if tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            tok = "--" + name.replace("_", "-") + (eq + value if eq else "")
        out.append(tok)
    return out


def format_metrics(metrics) -> str:
    """One line of ``key=value`` pairs: readable in a log, and free of braces so that a JSON
    summary printed later stays the only JSON on stdout."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))
