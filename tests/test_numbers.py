"""The one rule for numbers written into records: 6 decimals as a Python float, None where undefined."""

import json
import math

import numpy as np

from cxrbench.numbers import finite_or_none, mean_or_none, rounded


def test_rounded_is_a_python_float_with_six_decimals():
    for x in (np.float64(0.123456789), np.float32(0.5), 0.1234565, 1):
        got = rounded(x)
        assert type(got) is float and got == round(float(x), 6)
    assert json.dumps(rounded(np.float64(2 / 3))) == "0.666667"
    assert math.isnan(rounded(float("nan")))


def test_finite_or_none_and_mean_or_none():
    assert [finite_or_none(x) for x in (None, float("nan"), np.inf, -np.inf)] == [None] * 4
    assert finite_or_none(np.float64(0.98765432)) == 0.987654
    assert mean_or_none([]) is None and mean_or_none([0.1, 0.2, 0.4]) == round(float(np.mean([0.1, 0.2, 0.4])), 6)
