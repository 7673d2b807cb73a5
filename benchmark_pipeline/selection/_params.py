"""Turning MLflow's string params back into the values the trial was run with."""

from __future__ import annotations

import json
from typing import Any


def parse_param(text: str) -> Any:
    """``"32"`` → 32, ``"0.003"`` → 0.003, ``"True"`` → True; anything else stays a string.

    MLflow stores every param as ``str(value)``; for ints, floats and bools ``str`` round-trips exactly.
    """
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if json.dumps(value) not in ("NaN", "Infinity", "-Infinity") else text
