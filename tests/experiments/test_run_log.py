"""experiments.run_log: strict-JSON records that read back as written."""

import json
import math

import numpy as np

from experiments.run_log import plain, read_record


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
