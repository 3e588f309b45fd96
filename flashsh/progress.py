"""Progress reporting and Ctrl-C handling for long transfers.

Operations call a :class:`Progress`; they never draw. The shell picks a renderer: a rich
bar on a terminal, nothing when output is read by a machine.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass


class BarProgress:
    """A bar with bytes done, rate and time left, drawn on stderr."""

    def __init__(self) -> None:
        self._bar = None
        self._task = None

    def start(self, label: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self.finish()
        self._bar = bar = RichProgress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        bar.start()
        self._task = bar.add_task(label, total=total)

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class Cancel:
    """Set by Ctrl-C; transfers look at it between pages, never in the middle of one."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


@contextmanager
def ctrl_c_stops_between_pages() -> Iterator[Cancel]:
    """Turn SIGINT into a Cancel request for the duration of a transfer.

    Interrupting mid-command would leave the bootloader waiting for the rest of a page;
    stopping at a page boundary keeps the target in sync and the written range exact.
    """
    cancel = Cancel()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def on_sigint(signum: int, frame: object) -> None:
        cancel.request()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)
