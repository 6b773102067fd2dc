"""The client side of served inference: a leaf evaluator whose network runs elsewhere.

`ServedEvaluator` is a `NetworkEvaluator` without a network: it builds the leaves' observation
tensors here (OpenSpiel writes them straight into a numpy array), hands the float32 batch to
`forward` (in production a call to the node's inference server, see actors/inference.py) and
turns the raw logits and values into priors and per-seat values exactly as the in-process
evaluator does, with the same code. Given the same batch, a float32 server returns the same
numbers as the in-process network, so the search makes the same moves.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyspiel
import torch
from open_spiel.python.observation import make_observation

from orchestrator.play.evaluators import NetworkEvaluator

RemoteForward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ServedEvaluator(NetworkEvaluator):
    """Observations and the post-processing here, the forward pass through `forward`."""

    def __init__(self, forward: RemoteForward, game: pyspiel.Game) -> None:
        # NetworkEvaluator.__init__ is skipped on purpose: it moves and folds a model, and there is
        # none here. These are the attributes its observations() and evaluate() read.
        self.device = torch.device("cpu")
        self.model = None
        self.observation_shape = tuple(game.observation_tensor_shape())
        self.num_players = game.num_players()
        self.num_actions = game.num_distinct_actions()
        self._observation = make_observation(game)
        self._remote_forward = forward
        self.calls = 0
        self.leaves = 0
        self.seconds = 0.0
        self.network_seconds = 0.0  # here: time waiting for the server, transfer and batching included

    def forward(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        logits, values = self._remote_forward(np.ascontiguousarray(observations, dtype=np.float32))
        self.network_seconds += time.perf_counter() - started
        # The in-process evaluator widens its float32 outputs to float64 the same way.
        return np.asarray(logits, dtype=np.float64), np.asarray(values, dtype=np.float64)
