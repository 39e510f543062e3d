"""utils.json_files: non-finite floats are written as strings, the files are strict JSON, and the
strings read back as the same numbers."""

from __future__ import annotations

import math

import pytest

from utils.json_files import json_floats, json_safe, read_json, write_json


def test_non_finite_floats_are_strings_and_read_back_as_numbers(tmp_path):
    payload = {
        "q": math.inf,
        "thresholds": (0.25, math.inf, -math.inf),
        "nested": [{"x": math.nan}],
        "count": 3,
        "flag": True,
    }
    write_json(tmp_path / "out.json", payload)
    saved = read_json(tmp_path / "out.json")
    assert saved == {
        "q": "inf",
        "thresholds": [0.25, "inf", "-inf"],
        "nested": [{"x": "nan"}],
        "count": 3,
        "flag": True,
    }
    assert json_floats(saved["thresholds"]) == [0.25, math.inf, -math.inf]
    assert (tmp_path / "out.json").read_text().endswith("}\n")
    assert json_safe(payload)["thresholds"] == [0.25, "inf", "-inf"]


@pytest.mark.parametrize("token", ["Infinity", "-Infinity", "NaN"])
def test_reading_rejects_non_standard_constants(tmp_path, token):
    (tmp_path / "bad.json").write_text(f'{{"threshold": {token}}}')
    with pytest.raises(ValueError, match=token):
        read_json(tmp_path / "bad.json")
