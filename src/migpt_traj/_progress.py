"""Progress bars for long work (note embedding, bootstrap, tensorizing), quiet when asked or when nobody watches.

One switch, three states, used the same way everywhere: ``True`` draws a bar, ``False`` never does, ``None`` (auto)
draws one only when somebody is likely watching: ``$MIGPT_TRAJ_PROGRESS`` (``1``/``0``) decides when set; otherwise
a bar is drawn when the stream (``sys.stderr``) is a terminal or a Jupyter kernel's output, and never when ``$CI`` is
set (bars in CI logs are noise). Bars are plain text ``tqdm`` bars (``tqdm`` comes with Lightning); without
``tqdm`` everything is silent. Training has its own bar, Lightning's, switched by the same ``progress`` config field.

Example:
    >>> from migpt_traj._progress import progress, track
    >>> total = sum(track(range(3), desc="summing", enabled=False))
    >>> with progress(total=10, desc="working", enabled=False) as bar:
    ...     bar.update(10)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["ProgressBar", "progress", "progress_enabled", "track"]

T = TypeVar("T")
_ENV = "MIGPT_TRAJ_PROGRESS"
_FALSE = ("", "0", "false", "no", "off")


def _in_jupyter(stream: TextIO) -> bool:
    return type(stream).__module__.startswith("ipykernel")


def progress_enabled(requested: bool | None = None, *, stream: TextIO | None = None) -> bool:
    """Whether a bar should be drawn.

    Args:
        requested: ``True`` always, ``False`` never, ``None`` auto (module docs: ``$MIGPT_TRAJ_PROGRESS`` if set,
            else a terminal or Jupyter ``stream`` and no ``$CI``).
        stream: where the bar would go; ``None`` means ``sys.stderr``.
    """
    if requested is not None:
        return bool(requested)
    forced = os.environ.get(_ENV)
    if forced is not None:
        return forced.strip().lower() not in _FALSE
    if os.environ.get("CI", "").strip().lower() not in _FALSE:
        return False
    out = sys.stderr if stream is None else stream
    try:
        return bool(out.isatty()) or _in_jupyter(out)
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressBar:
    """Handle yielded by :func:`progress`: ``update(n)`` advances the bar by ``n`` units (no-op when quiet)."""

    def __init__(self, bar: Any = None) -> None:
        self._bar = bar

    @property
    def active(self) -> bool:
        """Whether a bar is being drawn."""
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)


@contextlib.contextmanager
def progress(
    *,
    total: int | None,
    desc: str,
    unit: str = "it",
    enabled: bool | None = None,
    leave: bool = True,
    stream: TextIO | None = None,
) -> Iterator[ProgressBar]:
    """A bar of ``total`` units (``None``: unknown) for the duration of the block, closed on exit.

    Args:
        total: expected number of units.
        desc: short label shown before the bar (no subject-level data).
        unit: name of one unit, e.g. ``"batch"``.
        enabled: ``True`` / ``False`` / ``None`` (auto), see :func:`progress_enabled`.
        leave: keep the finished bar on screen.
        stream: output stream; ``None`` means ``sys.stderr``.
    """
    bar = None
    if progress_enabled(enabled, stream=stream):
        try:
            from tqdm import tqdm  # plain text bar: tqdm.auto needs ipywidgets in Jupyter and warns without it
        except ImportError:  # pragma: no cover - tqdm comes with Lightning
            tqdm = None
        if tqdm is not None:
            out = sys.stderr if stream is None else stream
            bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=out, dynamic_ncols=True)
    try:
        yield ProgressBar(bar)
    finally:
        if bar is not None:
            bar.close()


def track(
    iterable: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    enabled: bool | None = None,
    leave: bool = True,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yield from ``iterable``, advancing a bar by one per item (``total`` defaults to ``len(iterable)``)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress(total=total, desc=desc, unit=unit, enabled=enabled, leave=leave, stream=stream) as bar:
        for item in iterable:
            yield item
            bar.update(1)
