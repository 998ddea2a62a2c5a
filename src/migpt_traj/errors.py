"""Exceptions and warnings raised by migpt_traj.

Every error subclasses :class:`MigptTrajError`, itself a :class:`ValueError`, so ``except ValueError`` keeps
working for callers that do not know this library. Messages name the column, subject, value and what would
be valid, so a user can find the defect in their data without a debugger.

Example:
    >>> import migpt_traj as mt
    >>> try:
    ...     raise mt.errors.SchemaError("Column 'code' is missing.")
    ... except ValueError as err:
    ...     print(type(err).__name__)
    SchemaError
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "DataReadError",
    "DuplicateEventError",
    "EventOrderError",
    "ImageReadError",
    "MigptTrajError",
    "MigptTrajWarning",
    "ModelStateError",
    "OutcomeError",
    "SchemaError",
    "SplitError",
    "ValueRangeError",
    "did_you_mean",
]


class MigptTrajError(ValueError):
    """Base class of every error raised by migpt_traj."""


class SchemaError(MigptTrajError):
    """A column is missing, has the wrong dtype, or holds nulls where none are allowed."""


class ValueRangeError(MigptTrajError):
    """A value is outside its valid range (non-finite, negative duration, inconsistent embedding length)."""


class DuplicateEventError(MigptTrajError):
    """The same event (subject, time, code, value) appears more than once."""


class EventOrderError(MigptTrajError):
    """Events contradict each other in time (an event after death, an availability before the event)."""


class OutcomeError(MigptTrajError):
    """An outcome code is unknown, never occurs, or is used as an input."""


class SplitError(MigptTrajError):
    """A subject split is malformed: unknown subjects, duplicates, unknown split names, empty splits."""


class DataReadError(MigptTrajError):
    """A file or MEDS root cannot be read."""


class ImageReadError(DataReadError):
    """An imaging study's file (``image_path``) is missing or cannot be read as a volume."""


class ConfigError(MigptTrajError):
    """A configuration value is invalid."""


class ModelStateError(MigptTrajError):
    """A model method was called in a state that does not allow it (e.g. predict before fit)."""


class MigptTrajWarning(UserWarning):
    """Warning issued when migpt_traj repairs input (e.g. sorts unsorted events) instead of failing."""


def did_you_mean(value: str, valid: Iterable[str], *, n: int = 3) -> str:
    """A ``" Did you mean 'x'?"`` suffix for error messages, or an empty string when nothing is close."""
    close = difflib.get_close_matches(value, list(valid), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
