"""The one JSON policy of every file the project writes: strict JSON (no NaN / Infinity
tokens), with each non-finite float, such as an infinite threshold, as the string "inf",
"-inf" or "nan"; :func:`json_floats` turns such values back into numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats replaced by 'inf' / '-inf' / 'nan' and tuples by lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def json_text(payload: Any, indent: Optional[int] = 2, sort_keys: bool = False) -> str:
    """`payload` as strict JSON text under the policy above (no trailing newline)."""
    return json.dumps(json_safe(payload), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(path: Path, payload: Any, indent: Optional[int] = 2, sort_keys: bool = False) -> None:
    """Write `payload` to `path` atomically as strict JSON, ending in a newline."""
    from utils.checkpoint import write_text_atomically  # imports torch: not for readers, --help

    write_text_atomically(path, json_text(payload, indent, sort_keys) + "\n")


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def read_json(path: Path) -> Any:
    """Parse `path` as strict JSON: NaN / Infinity tokens are a ValueError, like any bad JSON."""
    return json.loads(Path(path).read_text(), parse_constant=_reject_constant)


def json_floats(values: Iterable[float | str]) -> list[float]:
    """Numbers back from a saved list such as thresholds ('inf' / '-inf' / 'nan' included)."""
    return [float(value) for value in values]
