"""Schedules: each factory's formula at several iterations."""

from __future__ import annotations

import math

import pytest

from jitnet.optim import schedules


def test_formulas():
    assert [schedules.step(1.0, 3, 0.5)(it) for it in (0, 2, 3, 7)] == [1.0, 1.0, 0.5, 0.25]
    assert [schedules.multistep(2.0, [5, 2], 0.1)(it) for it in (0, 1, 2, 4, 5, 9)] == pytest.approx(
        [2.0, 2.0, 0.2, 0.2, 0.02, 0.02]
    )
    assert schedules.exp(0.5, 0.9)(3) == pytest.approx(0.5 * 0.9**3)
    assert schedules.inv(0.01, 1e-4, 0.75)(1000) == pytest.approx(0.01 * (1 + 0.1) ** -0.75)
    poly = schedules.poly(0.1, 100, 2.0)
    assert [poly(0), poly(50), poly(100), poly(150)] == pytest.approx([0.1, 0.025, 0.0, 0.0])
    cos = schedules.cosine(1.0, 10, min_lr=0.1)
    assert [cos(0), cos(5), cos(10), cos(20)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert cos(3) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.3)) / 2)


def test_against_torch_step_and_multistep():
    torch = pytest.importorskip("torch")
    for ours, make in [
        (schedules.step(0.1, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (schedules.multistep(0.1, [2, 5], 0.3), lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5], 0.3)),
        (schedules.exp(0.1, 0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
        (schedules.cosine(0.1, 8, 0.01), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 8, 0.01)),
    ]:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        for it in range(8):
            assert ours(it) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6), it
            opt.step()
            sched.step()


def test_bad_arguments():
    with pytest.raises(ValueError, match="step_size must be positive"):
        schedules.step(0.1, 0)
    with pytest.raises(ValueError, match="max_iter must be positive"):
        schedules.cosine(0.1, 0)
    with pytest.raises(ValueError, match="gamma must be a non-negative number"):
        schedules.exp(0.1, -1)
