"""Game-agnostic position features read from OpenSpiel's observation tensor, and exact terminal values.

The engine never special-cases a game, so what the features need to know about a game is learned
from the game itself, once per game, by `calibrate` (a few seeded random games):

* Geometry. The observation tensor is read as planes `[C, H, W]`: a 3-d shape is taken as is,
  more leading dimensions are folded into C, a 2-d shape is one plane and a 1-d shape is one
  plane of one row.
* Plane ownership, per viewing player. A plane belongs to the viewer when its cells switch on
  (0 -> 1) on the viewer's own moves and to an opponent when they switch on on the opponent's
  moves. That is how stones, discs and moved pieces behave whether the game encodes the board
  from the viewer's side (Othello) or in absolute colours (tic-tac-toe, connect four): the planes
  of the empty cells, which gain on either side's moves or never, and planes that are uniform in
  every sample (side to move, castling rights, move counters), belong to nobody.
* Typical mobility: the mean number of legal moves, to put a move count on a [0, 1) scale.

Every feature is "viewer minus opponents", so a positive weight rewards having more of it than
the opponent and a negative one rewards having less:

    material     (own - opp) / (own + opp) piece mass over the owned planes.
    mobility     n / (n + typical) for n legal moves of the side to move; positive when the viewer
                 is to move, negative when an opponent is. OpenSpiel lists legal moves for the
                 side to move only, so an opponent's count is not available without a null move no
                 game-agnostic code can make; at the leaves of a one-ply search, where the opponent
                 is to move in every child, this feature *is* the opponent's mobility.
    frontier     own pieces next to an empty cell minus the opponent's, over all pieces: exposed
                 pieces (an empty cell is one no owned plane marks).
    center       material weighted by closeness to the board's centre (1 at the centre, 0 at the
                 farthest cell), over the weight of the whole board.
    edge         pieces on border cells that are neither corners nor next to one, over their number.
    corner       pieces on the four corner cells, over their number.
    near_corner  pieces on the cells next to a corner (8-neighbourhood), over their number.

All features lie in [-1, 1]. Terminal states are not featurised by the evaluators: their value is
the exact outcome, `terminal_value` (win 1, loss -1, draw 0); searches that prefer faster wins use
`terminal_score`, which stays outside the `EVAL_BOUND` that `bound_evaluations` scales estimates into.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyspiel

FEATURE_NAMES: tuple[str, ...] = (
    "material",
    "mobility",
    "frontier",
    "center",
    "edge",
    "corner",
    "near_corner",
)

# Searches scale evaluations into [-EVAL_BOUND, EVAL_BOUND]; proven outcomes score at
# least 1 - WIN_DECAY * MAX_DECAY_MOVES = 0.99 in magnitude, so a proven win always outranks any
# evaluation and a faster win outranks a slower one.
EVAL_BOUND = 0.98
WIN_DECAY = 1e-6
MAX_DECAY_MOVES = 10_000

_CALIBRATION_SEED = 0
_CALIBRATION_GAMES = 8
_CALIBRATION_MOVES = 600
# A plane is owned when at least this share of its switch-ons happen on one side's moves.
_OWNERSHIP_MARGIN = 0.5


@dataclass(frozen=True)
class GameLayout:
    """What `calibrate` learned about one game; `owner[v][k]` is +1, -1 or 0 for viewer v, plane k.

    `sides[v]` is the same as a `[2, planes]` 0/1 matrix (viewer's planes, opponents' planes), which
    turns a batch of observations into own and opponent piece maps in one product.
    """

    planes: int
    height: int
    width: int
    owner: tuple[tuple[int, ...], ...]
    typical_mobility: float
    sides: np.ndarray


@dataclass(frozen=True)
class _Regions:
    """Per-cell weights of the geometric features as columns (center, edge, corner, near_corner) of an
    `[H*W, 4]` matrix, each column's normaliser (its total weight), and the `[H*W, H*W]`
    8-neighbourhood adjacency of the cells."""

    weights: np.ndarray
    totals: np.ndarray
    adjacency: np.ndarray


def _plane_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    dims = [int(d) for d in shape]
    if len(dims) == 1:
        return 1, 1, dims[0]
    if len(dims) == 2:
        return 1, dims[0], dims[1]
    return int(np.prod(dims[:-2])), dims[-2], dims[-1]


def _observe(state: pyspiel.State, player: int, layout_shape: tuple[int, int, int]) -> np.ndarray:
    planes, height, width = layout_shape
    # fromiter: converting OpenSpiel's list with np.asarray is several times slower.
    flat = np.fromiter(state.observation_tensor(player), dtype=np.float64, count=planes * height * width)
    return flat.reshape(planes, height * width)


@functools.lru_cache(maxsize=64)
def calibrate(game_string: str) -> GameLayout:
    """Learn a game's plane layout, plane ownership per viewer and typical mobility (cached per game)."""
    game = pyspiel.load_game(game_string)
    shape = _plane_shape(game.observation_tensor_shape())
    players = game.num_players()
    rng = np.random.default_rng(_CALIBRATION_SEED)
    own_gain = np.zeros((players, shape[0]))
    other_gain = np.zeros((players, shape[0]))
    non_uniform = np.zeros(shape[0], dtype=bool)
    move_counts: list[int] = []
    moves = 0
    for _ in range(_CALIBRATION_GAMES):
        state = game.new_initial_state()
        before = [_observe(state, v, shape) for v in range(players)]
        while not state.is_terminal() and moves < _CALIBRATION_MOVES:
            legal = state.legal_actions()
            move_counts.append(len(legal))
            mover = state.current_player()
            state.apply_action(int(legal[rng.integers(len(legal))]))
            moves += 1
            if state.is_terminal():
                break  # some games refuse to observe a finished game
            after = [_observe(state, v, shape) for v in range(players)]
            for viewer in range(players):
                gained = np.clip(after[viewer] - before[viewer], 0.0, None).sum(axis=1)
                (own_gain if viewer == mover else other_gain)[viewer] += gained
                non_uniform |= after[viewer].max(axis=1) > after[viewer].min(axis=1)
            before = after
        if moves >= _CALIBRATION_MOVES:
            break
    total = own_gain + other_gain
    share = np.divide(own_gain - other_gain, total, out=np.zeros_like(total), where=total > 0)
    owner = np.where(share > _OWNERSHIP_MARGIN, 1, np.where(share < -_OWNERSHIP_MARGIN, -1, 0))
    owner = owner * non_uniform
    return GameLayout(
        planes=shape[0],
        height=shape[1],
        width=shape[2],
        owner=tuple(tuple(int(o) for o in row) for row in owner),
        typical_mobility=float(np.mean(move_counts)) if move_counts else 1.0,
        sides=np.stack([owner > 0, owner < 0], axis=1).astype(np.float64),
    )


@functools.lru_cache(maxsize=64)
def _regions(height: int, width: int) -> _Regions:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    distance = np.hypot(rows - (height - 1) / 2, cols - (width - 1) / 2)
    center = 1.0 - distance / distance.max() if distance.max() > 0 else np.ones_like(distance)
    corner = np.zeros((height, width), dtype=bool)
    for r in {0, height - 1}:
        for c in {0, width - 1}:
            corner[r, c] = True
    near = np.zeros_like(corner)
    for r, c in zip(*np.nonzero(corner)):
        near[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = True
    near &= ~corner
    border = np.zeros_like(corner)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    edge = border & ~corner & ~near
    weights = np.stack([center.ravel(), edge.ravel(), corner.ravel(), near.ravel()], axis=1).astype(np.float64)
    flat_rows, flat_cols = rows.ravel(), cols.ravel()
    row_gap = np.abs(flat_rows[:, None] - flat_rows[None, :])
    col_gap = np.abs(flat_cols[:, None] - flat_cols[None, :])
    adjacency = (row_gap <= 1) & (col_gap <= 1)
    np.fill_diagonal(adjacency, False)
    return _Regions(weights=weights, totals=weights.sum(axis=0), adjacency=adjacency.astype(np.float64))


def features_many(states: Sequence[pyspiel.State], player: int) -> np.ndarray:
    """`features` of several non-terminal states of one game, as a `[len(states), len(FEATURE_NAMES)]` array."""
    if not states:
        return np.zeros((0, len(FEATURE_NAMES)))
    layout = calibrate(str(states[0].get_game()))
    shape = (layout.planes, layout.height, layout.width)
    regions = _regions(layout.height, layout.width)
    obs = np.stack([_observe(state, player, shape) for state in states])
    sides = layout.sides[player] @ obs
    own, opp = sides[:, 0], sides[:, 1]
    difference = own - opp
    pieces = own.sum(axis=1) + opp.sum(axis=1)
    exposed = ((own + opp == 0) @ regions.adjacency) > 0

    n_moves = np.array([len(state.legal_actions()) for state in states], dtype=np.float64)
    to_move = np.array([state.current_player() == player for state in states])

    # Raw "own minus opponent" terms in FEATURE_NAMES order, then each over its normaliser.
    raw = np.empty((len(states), len(FEATURE_NAMES)))
    raw[:, 0] = difference.sum(axis=1)
    raw[:, 1] = np.where(to_move, n_moves, -n_moves)
    raw[:, 2] = (difference * exposed).sum(axis=1)
    raw[:, 3:] = difference @ regions.weights
    scale = np.empty_like(raw)
    scale[:, 0] = scale[:, 2] = pieces
    scale[:, 1] = n_moves + layout.typical_mobility
    scale[:, 3:] = regions.totals
    return np.clip(np.divide(raw, scale, out=np.zeros_like(raw), where=scale > 0), -1.0, 1.0)


def features(state: pyspiel.State, player: int) -> np.ndarray:
    """The `FEATURE_NAMES` vector of a non-terminal `state`, seen by `player` (the state is not changed)."""
    return features_many([state], player)[0]


def terminal_value(state: pyspiel.State, player: int) -> float:
    """Exact outcome of a terminal state for `player`: 1 win, -1 loss, 0 draw (or shared best)."""
    returns = state.returns()
    mine = returns[player]
    best_other = max(r for p, r in enumerate(returns) if p != player)
    return 1.0 if mine > best_other else -1.0 if mine < best_other else 0.0


def bound_evaluations(values: np.ndarray) -> np.ndarray:
    """Evaluations in [-1, 1] scaled into [-EVAL_BOUND, EVAL_BOUND], below every proven outcome.

    Scaling rather than clipping keeps the order of strong evaluations, which a clip would tie.
    """
    return EVAL_BOUND * np.clip(values, -1.0, 1.0)


def terminal_score(state: pyspiel.State, player: int) -> float:
    """`terminal_value` shrunk by game length so that a search prefers faster wins and slower losses."""
    outcome = terminal_value(state, player)
    return outcome * (1.0 - WIN_DECAY * min(state.move_number(), MAX_DECAY_MOVES))
