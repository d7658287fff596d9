"""Weight averaging: warm-up, convergence, buffers, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from histodetect.fit.ema import WeightEMA


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_average_trails_the_model() -> None:
    torch.manual_seed(0)
    model = _net()
    ema = WeightEMA(model, decay=0.5)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)  # warm-up decay min(0.5, 2 / 11): the average moves 9/11 of the way
    torch.testing.assert_close(ema.module[0].weight, start + 9 / 11)
    assert int(ema.module[1].num_batches_tracked) == 7
    ema.update(model)  # decay min(0.5, 3 / 12): a quarter of the gap is left
    torch.testing.assert_close(ema.module[0].weight, start + 1 - 0.25 * 2 / 11)
    for _ in range(40):
        ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, model[0].weight, atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_state_round_trip() -> None:
    model = _net()
    ema = WeightEMA(model, decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            model[0].bias.add_(0.3)
        ema.update(model)
    other = WeightEMA(_net(), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 3
    torch.testing.assert_close(other.module[0].bias, ema.module[0].bias)
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(model, decay=1.5)
