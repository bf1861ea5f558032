"""Running the stages: the pipeline's steps, its profiles, the demo, settings and parameter resolution."""
