"""Command-line plumbing shared by the entry point scripts, which import it before anything heavy."""
import sys

from tfqa.prefork import delegate_if_configured

# Under the pipeline, the stage runs in its prefork server (libraries already imported) and this
# process only waits for its exit status.
delegate_if_configured()


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
