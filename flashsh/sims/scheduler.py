"""One thread that runs timed callbacks in order: the clock of a simulated bus or board.

Everything a simulated node does runs on this thread, so node state needs no locks of its
own. Callbacks due at the same moment run in the order they were scheduled.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Scheduler:
    """Runs ``fn()`` at wall time ``when`` (``time.monotonic`` scale)."""

    def __init__(self, name: str = "sim-clock") -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.errors: list[BaseException] = []

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), fn))
            self._cond.notify()

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self.at(self.now() + max(delay, 0.0), fn)

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the clock thread as soon as possible."""
        self.at(self.now(), fn)

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        wait = self._heap[0][0] - self.now()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception as exc:  # a model bug must not stop the clock silently
                self.errors.append(exc)
