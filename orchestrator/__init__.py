"""P2P orchestrator: a cluster orchestrator for training game-playing AIs by self-play, on Ray."""

__version__ = "0.1.0"
