"""Data-directory rules: safe paths, manifests, transfers and cleanup (pure Python)."""
