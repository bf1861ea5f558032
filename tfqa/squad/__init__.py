"""SQuAD 2.0: reading, features, and the official metric (the ALBERT variants' first stage)."""
