"""tfqa: the 1st-place Natural Questions training system as an MLflow-tracked experiment registry."""

__version__ = "0.1.0"
