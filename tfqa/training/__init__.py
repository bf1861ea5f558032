"""The training loop, its checkpoints, and the table of the five model variants."""
