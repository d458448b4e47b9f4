import itertools

import pytest

import goup_probe as gp
from goup_probe.schedule import resolve


def test_every_captures_multiples_from_zero():
    s = gp.every(10)
    assert [t for t in range(35) if s(t)] == [0, 10, 20, 30]


def test_log_spaced_is_dense_early_and_includes_zero_and_end():
    s = gp.log_spaced(1000, num=20)
    steps = [t for t in range(1000) if s(t)]
    assert steps[0] == 0 and steps[-1] == 999
    assert len(steps) == 20
    assert steps[1] - steps[0] < steps[-1] - steps[-2]
    assert not s(1000)  # max_step is the number of steps, as in range(1000)


@pytest.mark.parametrize("max_step", [1, 2, 3, 7, 25, 100, 600, 800, 1500, 10_000])
@pytest.mark.parametrize("num", [1, 2, 3, 5, 25, 50, 200])
def test_log_spaced_captures_exactly_num_steps_from_zero_to_the_last(max_step, num):
    if num > max_step:
        with pytest.raises(ValueError, match=f"num={num}"):
            gp.log_spaced(max_step, num)
        return
    s = gp.log_spaced(max_step, num)
    steps = [t for t in range(max_step + 5) if s(t)]
    assert len(steps) == num
    assert steps[0] == 0
    if num > 1:
        assert steps[-1] == max_step - 1
    assert all(b > a for a, b in itertools.pairwise(steps))
    assert all(t < max_step for t in steps)


def test_log_spaced_over_range_800_reaches_the_end_with_25_steps():
    s = gp.log_spaced(800, 25)
    steps = [t for t in range(800) if s(t)]
    assert len(steps) == 25 and steps[-1] == 799 and max(steps[:-1]) > 400
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert gaps[0] == 1 and gaps[-1] > 100  # dense early, sparse late


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_log_spaced_refuses_bad_arguments_naming_them(bad):
    with pytest.raises(ValueError, match="max_step"):
        gp.log_spaced(bad, 1)
    with pytest.raises(ValueError, match="num"):
        gp.log_spaced(100, bad)


def test_explicit_and_resolve():
    assert [t for t in range(10) if gp.explicit([3, 5])(t)] == [3, 5]
    assert resolve(None, None)(10) and not resolve(None, None)(5)
    with pytest.raises(ValueError, match="either"):
        resolve(5, gp.every(2))
    with pytest.raises(ValueError):
        gp.every(0)
