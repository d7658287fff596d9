"""Exponential moving average of a network's weights (Polyak averaging)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """A copy of ``model`` whose weights and buffers trail it by ``decay`` per update.

    The effective decay warms up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so
    the first (random) weights fade quickly. Integer buffers (batch counts) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must be in (0, 1), not {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        own, new = self.module.state_dict(), model.state_dict()
        for key, value in own.items():
            if value.dtype.is_floating_point:
                value.lerp_(new[key].detach(), 1.0 - d)
            else:
                value.copy_(new[key])

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
