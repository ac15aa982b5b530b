"""experiments.run_log: strict-JSON records that read back as written."""

import json
import math

import numpy as np

from experiments.run_log import plain, read_record, tokens_per_s


def test_non_finite_values_round_trip_through_strict_json_at_any_depth():
    record = {
        "loss": math.nan,
        "curve": [[0, 3.5], [10, math.inf]],
        "nested": {"low": -math.inf, "scalar": np.float32(2.5), "count": np.int64(3)},
        "name": "nan-free",
    }
    text = json.dumps(plain(record), allow_nan=False)  # strict JSON: no NaN literals
    back = read_record(text)
    assert math.isnan(back["loss"]) and back["curve"] == [[0, 3.5], [10, math.inf]]
    assert back["nested"] == {"low": -math.inf, "scalar": 2.5, "count": 3}
    assert back["name"] == "nan-free"


def test_tokens_per_s_leaves_out_the_compiling_step():
    steps = [
        {"tokens": 100, "perf/elapsed_s": 7.0},  # compiling
        {"tokens": 200, "perf/elapsed_s": 10.0},
        {"tokens": 400, "perf/elapsed_s": 12.0},
    ]
    assert tokens_per_s(steps) == 100.0
    assert tokens_per_s(steps, first=0) == 60.0
    assert tokens_per_s(steps[:2], first=0) == 100.0 / 3.0
    assert math.isnan(tokens_per_s(steps[:1]))  # no time between the two records
