"""Google's NQ metric, the official prediction records, dev-set evaluation, error analysis."""
