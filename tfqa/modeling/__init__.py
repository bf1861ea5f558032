"""The encoder with its answer-type and span heads, loading it from any reference, its saved form."""
