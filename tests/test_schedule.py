import pytest

import goup_probe as gp
from goup_probe.schedule import resolve


def test_every_captures_multiples_from_zero():
    s = gp.every(10)
    assert [t for t in range(35) if s(t)] == [0, 10, 20, 30]


def test_log_spaced_is_dense_early_and_includes_zero_and_end():
    s = gp.log_spaced(1000, num=20)
    steps = [t for t in range(1001) if s(t)]
    assert steps[0] == 0 and steps[-1] == 1000
    assert len(steps) <= 20
    assert steps[1] - steps[0] < steps[-1] - steps[-2]


def test_explicit_and_resolve():
    assert [t for t in range(10) if gp.explicit([3, 5])(t)] == [3, 5]
    assert resolve(None, None)(10) and not resolve(None, None)(5)
    with pytest.raises(ValueError, match="either"):
        resolve(5, gp.every(2))
    with pytest.raises(ValueError):
        gp.every(0)
