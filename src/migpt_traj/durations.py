"""Durations as the CLI writes them: ``365``, ``365d``, ``6m``, ``1y``, ``2.5y`` → float days.

A year is 365.25 days and a month a twelfth of that (30.4375 days), so ``1y`` = 365.25, ``5y`` = 1826.25.

Example:
    >>> parse_days("6m"), parse_days("1y"), parse_days("30d"), parse_days("12")
    (182.625, 365.25, 30.0, 12.0)
"""

from __future__ import annotations

import math
import re

from migpt_traj.errors import ConfigError

__all__ = ["DAYS_PER_YEAR", "parse_days", "parse_days_list"]

DAYS_PER_YEAR = 365.25
_UNITS = {"d": 1.0, "w": 7.0, "m": DAYS_PER_YEAR / 12, "y": DAYS_PER_YEAR}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([dwmy]?)\s*$", re.IGNORECASE)


def parse_days(text: str | float | int, *, name: str = "duration") -> float:
    """Parse one duration into days (see module docstring); raises ConfigError on anything else."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _PATTERN.match(text)
        if not match:
            raise ConfigError(
                f"Cannot read {name} {text!r}; write days as a number or with a unit: '365', '365d', '26w', '6m', '1y'."
            )
        value = float(match.group(1)) * _UNITS[(match.group(2) or "d").lower()]
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number of days >= 0; got {text!r}.")
    return value


def parse_days_list(text: str, *, name: str = "durations") -> list[float]:
    """Parse a comma-separated list such as ``"1y,3y,5y"``."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"{name} is empty; give a comma-separated list such as '1y,3y'.")
    return [parse_days(p, name=name) for p in parts]
