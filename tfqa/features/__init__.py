"""From records to model inputs: tokenizer, featurizer, labels, candidate selection, cache, batches."""
