"""Residual policy/value network over a game's observation tensor.

The trunk is an AlphaZero-style tower of 3x3 residual blocks over the observation planes. The
policy head gives one logit per distinct action of the game (illegal moves are masked by the
search, which knows the legal actions); the value head ends in tanh. Two-player games get one
value, for the player to move (the opponent's is its negation); games with more seats get one
value per seat, in seat order, so n-player search can back up a vector of returns.

Any observation shape works: (C, H, W) is used as is, (H, W) becomes one plane, and a flat
vector becomes C planes of 1x1, where the 3x3 convolutions reduce to dense layers.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

# (max board area, blocks, channels): small boards get small nets; Othello (64 squares) gets 6x64.
_SIZES = ((16, 2, 32), (49, 4, 48), (100, 6, 64))
_LARGE = (10, 128)


def planes_shape(observation_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(observation_shape) == 3:
        return tuple(observation_shape)  # type: ignore[return-value]
    if len(observation_shape) == 2:
        return (1, observation_shape[0], observation_shape[1])
    return (math.prod(observation_shape), 1, 1)


@dataclass(frozen=True)
class ResNetConfig:
    observation_shape: tuple[int, ...]
    num_actions: int
    num_players: int = 2
    blocks: int = 6
    channels: int = 64

    def __post_init__(self) -> None:
        if self.blocks < 0 or self.channels < 1 or self.num_actions < 1 or self.num_players < 1:
            raise ValueError(f"invalid network config {self}")
        object.__setattr__(self, "observation_shape", tuple(int(d) for d in self.observation_shape))

    @property
    def value_outputs(self) -> int:
        return 1 if self.num_players == 2 else self.num_players

    @property
    def head_channels(self) -> int:
        # Few head planes on big boards (they are flattened into a dense layer), more on tiny ones.
        _, height, width = planes_shape(self.observation_shape)
        return max(2, min(32, 128 // (height * width)))

    @classmethod
    def for_game(cls, spec: Any, blocks: int | None = None, channels: int | None = None) -> "ResNetConfig":
        """Size the net for a `GameSpec` (anything with observation_shape, num_actions, num_players)."""
        _, height, width = planes_shape(tuple(spec.observation_shape))
        area = height * width
        default_blocks, default_channels = next(((b, c) for limit, b, c in _SIZES if area <= limit), _LARGE)
        return cls(
            observation_shape=tuple(spec.observation_shape),
            num_actions=spec.num_actions,
            num_players=spec.num_players,
            blocks=default_blocks if blocks is None else blocks,
            channels=default_channels if channels is None else channels,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["observation_shape"] = list(self.observation_shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResNetConfig":
        return cls(**{**data, "observation_shape": tuple(data["observation_shape"])})


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class PolicyValueNet(nn.Module):
    """forward(obs [B, *observation_shape]) -> (policy logits [B, num_actions], values [B, value_outputs])."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        planes, height, width = planes_shape(config.observation_shape)
        self._planes = (planes, height, width)
        c, h = config.channels, config.head_channels
        self.stem = nn.Sequential(nn.Conv2d(planes, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.tower = nn.Sequential(*(_ResidualBlock(c) for _ in range(config.blocks)))
        area = height * width
        self.policy_head = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(), nn.Flatten(),
            nn.Linear(h * area, config.num_actions),
        )
        self.value_head = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(), nn.Flatten(),
            nn.Linear(h * area, c), nn.ReLU(), nn.Linear(c, config.value_outputs), nn.Tanh(),
        )

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tower(self.stem(obs.reshape(obs.shape[0], *self._planes)))
        return self.policy_head(x), self.value_head(x)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=True)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused.to(conv.weight.device)


@torch.no_grad()
def inference_copy(model: PolicyValueNet) -> PolicyValueNet:
    """A copy for search with every batch norm folded into its convolution (same outputs in eval mode).

    Folding removes a third of the layers a forward pass walks through, which matters most at the
    small batch sizes search produces; the original stays trainable.
    """
    fused = copy.deepcopy(model).eval()
    fused.stem[0], fused.stem[1] = _fold(fused.stem[0], fused.stem[1]), nn.Identity()
    for block in fused.tower:
        block.conv1, block.bn1 = _fold(block.conv1, block.bn1), nn.Identity()
        block.conv2, block.bn2 = _fold(block.conv2, block.bn2), nn.Identity()
    for head in (fused.policy_head, fused.value_head):
        head[0], head[1] = _fold(head[0], head[1]), nn.Identity()
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    return fused
