"""Cross-cutting pieces every layer uses: one-line refusals, safe file destinations, progress."""
