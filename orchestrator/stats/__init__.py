"""Evaluation statistics: Bradley–Terry ratings, fishtest's SPRT, pentanomial pairing (numpy/scipy only)."""
