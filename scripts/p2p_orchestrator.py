#!/usr/bin/env python3
"""Thin launcher, as the seed documents: `python scripts/p2p_orchestrator.py --port 8770`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["start", *sys.argv[1:]]))
