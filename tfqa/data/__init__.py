"""Reading NQ and turning pages into records: both file formats, conversion, candidates, generated data."""
