"""One direction of a UART line, timed like the real thing.

A byte takes ``bits_per_byte / baud`` seconds on the wire (10 bits for 8N1: start, 8 data,
stop) and bytes queue behind each other, so a 128-byte page at 115200 baud arrives 11 ms
after it was sent, one byte every 87 us. ``throttle`` scales every such delay: 1.0 is
real speed, 0 delivers at once so tests run fast.

When the two ends disagree on the baud rate the receiver samples the sender's waveform at
its own bit period and gets whatever that gives: a deterministic garbage byte, usually
with a framing error (the stop bit sampled low). A real UART may also see an extra start
edge inside a long frame and produce two bytes; the model keeps one byte per byte sent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Start + 8 data + stop. 8E1 would be 11.
BITS_8N1 = 10


@dataclass(frozen=True)
class Framing:
    """A UART character format, named as in pyserial: parity "N", "E", "O", "M" or "S"."""

    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    @property
    def bits(self) -> float:
        """Bit times one character occupies: start, data, parity, stop."""
        return 1 + self.bytesize + (self.parity != "N") + self.stopbits

    def parity_bit(self, value: int) -> int | None:
        """The parity bit sent with ``value``, or None without parity."""
        ones = bin(value & ((1 << self.bytesize) - 1)).count("1")
        bits = {"E": ones & 1, "O": (ones & 1) ^ 1, "M": 1, "S": 0}
        return bits.get(self.parity)


FRAMING_8N1 = Framing()
FRAMING_8E1 = Framing(parity="E")


@dataclass(frozen=True)
class WireByte:
    """One character as the receiving UART sees it."""

    value: int
    #: Wall-clock time (``time.monotonic``) the sender started shifting it out.
    start: float
    #: Wall-clock time its stop bit has been sampled: from then on the receiver has it.
    due: float
    #: The receiver sampled the stop bit low (sender at another baud rate).
    framing_error: bool = False
    #: The receiver checks parity and the parity bit was wrong (PE).
    parity_error: bool = False


def sample_frame(
    value: int, tx_baud: int, rx_baud: int, bits_per_byte: int = BITS_8N1
) -> tuple[int, bool]:
    """Return (byte, framing_error) a UART at ``rx_baud`` reads from one frame sent at
    ``tx_baud``, both ends without parity and ``bits_per_byte`` long.

    The receiver syncs on the start edge and samples the middle of each of its own bit
    periods; past the sender's frame the line idles high. Within the usual few per cent of
    tolerance this gives the byte back unchanged.
    """
    if tx_baud == rx_baud:
        return value, False
    framing = Framing(stopbits=bits_per_byte - 9)
    got, framing_error, _ = receive_frame(value, tx_baud, rx_baud, framing, framing)
    return got, framing_error


def receive_frame(
    value: int, tx_baud: int, rx_baud: int, tx: Framing, rx: Framing
) -> tuple[int, bool, bool]:
    """Return (byte, framing_error, parity_error) a UART at ``rx_baud`` expecting ``rx``
    reads from ``value`` sent at ``tx_baud`` as ``tx``."""
    if tx_baud == rx_baud and tx == rx:
        return value, False, False
    # Line level at sender bit k: 0 = start, data LSB first, parity, then stop/idle (1).
    parity = tx.parity_bit(value)
    levels = [0] + [(value >> i) & 1 for i in range(tx.bytesize)]
    levels += ([] if parity is None else [parity]) + [1]
    ratio = tx_baud / rx_baud  # receiver bit period in sender bit periods

    def level_at(rx_bit: float) -> int:
        k = int(rx_bit * ratio)
        return levels[k] if k < len(levels) else 1

    out = 0
    for i in range(rx.bytesize):
        out |= level_at(1.5 + i) << i
    position = 1.5 + rx.bytesize
    parity_error = False
    expected = rx.parity_bit(out)
    if expected is not None:
        parity_error = level_at(position) != expected
        position += 1
    framing_error = level_at(position) != 1
    return out, framing_error, parity_error


class Wire:
    """A one-way byte pipe with UART timing, safe to use from two threads.

    The sender calls :meth:`send`; the receiver takes bytes whose ``due`` time has passed.
    Both ends' baud rates live here because a byte is garbled by the pair, not by one end.
    """

    def __init__(
        self,
        tx_baud: int,
        rx_baud: int,
        *,
        bits_per_byte: int = BITS_8N1,
        throttle: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        tx_framing: Framing | None = None,
        rx_framing: Framing | None = None,
    ) -> None:
        if throttle < 0:
            raise ValueError("throttle must be >= 0")
        self.tx_baud = tx_baud
        self.rx_baud = rx_baud
        self.bits_per_byte = bits_per_byte if tx_framing is None else tx_framing.bits
        #: Character formats of the two ends; None = the plain frame of ``bits_per_byte``.
        self.tx_framing = tx_framing
        self.rx_framing = rx_framing
        self.throttle = throttle
        self.clock = clock
        #: Guards everything below; receivers wait on it, and other threads may use it
        #: to wake a receiver (a reset, a stop).
        self.cond = threading.Condition()
        self._queue: deque[WireByte] = deque()
        # When the line is free again: the end of the last queued byte.
        self._line_free = 0.0
        self.closed = False

    # ------------------------------------------------------------------ sending

    @property
    def byte_time(self) -> float:
        """Seconds one byte occupies the line at the sender's rate, throttle applied."""
        return self.bits_per_byte / self.tx_baud * self.throttle

    def send(self, data: bytes, at: float | None = None) -> float:
        """Queue ``data`` behind whatever is still on the line; return the time the first
        byte starts shifting out. ``at`` is when the sender hands the bytes over (default
        now)."""
        with self.cond:
            if self.closed:
                return self.clock()
            now = self.clock() if at is None else at
            first = start = max(now, self._line_free)
            step = self.byte_time
            for value in data:
                got, framing, parity = self._sample(value)
                self._queue.append(WireByte(got, start, start + step, framing, parity))
                start += step
            self._line_free = start
            self.cond.notify_all()
            return first

    def _sample(self, value: int) -> tuple[int, bool, bool]:
        if self.tx_framing is None and self.rx_framing is None:
            return (*sample_frame(value, self.tx_baud, self.rx_baud, self.bits_per_byte), False)
        plain = Framing(stopbits=self.bits_per_byte - 9)
        tx, rx = self.tx_framing or plain, self.rx_framing or plain
        return receive_frame(value, self.tx_baud, self.rx_baud, tx, rx)

    def set_tx_framing(self, framing: Framing) -> None:
        """The sender changed its character format: later bytes take its frame length."""
        with self.cond:
            self.tx_framing = framing
            self.bits_per_byte = framing.bits

    @property
    def line_free(self) -> float:
        """When the last byte queued so far will have left the line."""
        with self.cond:
            return self._line_free

    def last_start(self) -> float:
        """When the most recently queued byte starts shifting: a UART's data register is
        free again from that moment (the byte has moved to the shift register)."""
        with self.cond:
            return self._queue[-1].start if self._queue else 0.0

    def cancel_from(self, t: float) -> int:
        """Drop queued bytes that have not started shifting by ``t`` (the sender was reset);
        return how many."""
        with self.cond:
            kept = [b for b in self._queue if b.start < t]
            dropped = len(self._queue) - len(kept)
            self._queue = deque(kept)
            self._line_free = kept[-1].due if kept else min(self._line_free, t)
            return dropped

    # ------------------------------------------------------------------ receiving

    def arrived(self, t: float | None = None) -> int:
        """How many bytes the receiver holds at time ``t`` (default now)."""
        with self.cond:
            return self._count_due(self.clock() if t is None else t)

    def _count_due(self, t: float) -> int:
        n = 0
        for b in self._queue:
            if b.due > t:
                break
            n += 1
        return n

    def peek(self) -> WireByte | None:
        """The next byte in flight or arrived, without taking it. Caller holds ``cond``."""
        return self._queue[0] if self._queue else None

    def pop(self) -> WireByte:
        """Take the next byte. Caller holds ``cond`` and has checked it arrived."""
        return self._queue.popleft()

    def drop_arrived(self, t: float | None = None, keep: int = 0) -> int:
        """Discard bytes that arrived by ``t`` except the first ``keep``; return how many
        went. Caller may hold ``cond``."""
        with self.cond:
            t = self.clock() if t is None else t
            due = self._count_due(t)
            if due <= keep:
                return 0
            kept = [self._queue.popleft() for _ in range(keep)]
            for _ in range(due - keep):
                self._queue.popleft()
            self._queue.extendleft(reversed(kept))
            return due - keep

    def read(self, size: int, timeout: float | None) -> bytes:
        """Block until ``size`` bytes have arrived or ``timeout`` seconds pass (None: no
        limit); return what arrived, at most ``size`` bytes."""
        deadline = None if timeout is None else self.clock() + timeout
        with self.cond:
            while True:
                now = self.clock()
                ready = self._count_due(now)
                if ready >= size or self.closed:
                    break
                if deadline is not None and now >= deadline:
                    break
                wake = deadline
                if ready < len(self._queue):
                    due = self._queue[ready].due
                    wake = due if wake is None else min(wake, due)
                self.cond.wait(None if wake is None else max(wake - now, 0.0))
            take = min(size, self._count_due(self.clock()))
            return bytes(self._queue.popleft().value for _ in range(take))

    def wake(self) -> None:
        """Wake every thread waiting on this wire (it re-checks its own conditions)."""
        with self.cond:
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def __iter__(self) -> Iterator[WireByte]:
        """Snapshot of the queue, oldest first (for tests and logs)."""
        with self.cond:
            return iter(list(self._queue))
