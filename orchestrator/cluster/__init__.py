"""Cluster rules: membership, jobs, election (pure Python with injectable clocks)."""
