import pytest

from pyro_mcvae.infer import ConstantBeta, CyclicalBeta, LinearWarmup, parse_beta_schedule


def test_constant():
    assert [ConstantBeta(0.5)(s) for s in (0, 10, 10_000)] == [0.5] * 3


def test_linear_warmup():
    sched = LinearWarmup(steps=10, start=0.0, end=1.0)
    assert sched(0) == 0.0 and sched(5) == pytest.approx(0.5) and sched(10) == 1.0 and sched(99) == 1.0


def test_cyclical():
    sched = CyclicalBeta(period=10, ramp=0.5)
    assert [sched(s) for s in (0, 2, 5, 9, 10, 12)] == pytest.approx([0.0, 0.4, 1.0, 1.0, 0.0, 0.4])


def test_parse():
    assert parse_beta_schedule(0.3)(7) == 0.3
    assert parse_beta_schedule("0.3")(7) == 0.3
    assert parse_beta_schedule("linear:100")(50) == pytest.approx(0.5)
    assert parse_beta_schedule("linear:100:2")(50) == pytest.approx(1.0)
    assert parse_beta_schedule("cyclical:20")(25) == pytest.approx(0.5)
    for bad in ("linear", "warp:3", "linear:0", "-1"):
        with pytest.raises(ValueError):
            parse_beta_schedule(bad)
