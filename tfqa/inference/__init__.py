"""From a model to answers: batched scoring, sharding, decoding, ensembling, the cascade."""
