"""One module per pipeline stage: what the stage does, given resolved settings and a run logger."""
