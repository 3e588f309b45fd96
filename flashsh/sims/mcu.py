"""A microcontroller running firmware in a thread: reset, watchdog, UART, busy time.

Firmware models are written like the real C code: a main loop that calls ``getch()``,
``putch()`` and waits on flash programming. They call this class for each of those, and
it keeps the chip's clock:

* ``now`` is the chip's time on the ``time.monotonic`` scale. Waiting for a byte, flash
  programming and LED blinking move it forward; instructions take no time. Before looking
  at the UART the thread sleeps until the wall clock has caught up with ``now``, so the
  bytes the host has sent by then are all known.
* Delays that come from the chip's speed or the line (start-up, page writes, LED blinks,
  the byte time) are scaled by ``throttle``; timeouts (the watchdog, ATmegaBOOT's getch
  limit) are not, so a shortened watchdog is a separate option.
* The receiver holds two bytes plus the one in its shift register; bytes arriving while
  it is full are lost (data overrun), as when a host sends during a page write. With
  ``throttle`` 0 all bytes arrive at once and overruns are not modelled.
* An external reset (a DTR/RTS edge through the Arduino's 100 nF capacitor) or the
  watchdog raises :class:`ChipReset` out of whatever the firmware is doing; the thread
  then starts again from the reset vector with the cause in MCUSR.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flashsh.sims.faults import Faults
from flashsh.sims.memory import ChipMemory
from flashsh.sims.wire import Wire, WireByte

# MCUSR reset flags (ATmega328P datasheet, "MCUSR - MCU Status Register").
PORF = 0x01
EXTRF = 0x02
BORF = 0x04
WDRF = 0x08

# Start-up delay after reset with the Arduino fuses (CKSEL 1111, SUT 11: "14CK + 65 ms"
# additional delay from reset; datasheet "Low Power Crystal Oscillator" start-up table).
STARTUP_MS = 65.0
# The receive FIFO: two data bytes plus the shift register (datasheet "Receiving Frames").
RX_DEPTH = 3

_CAUSES = {PORF: "power-on", EXTRF: "external", WDRF: "watchdog", BORF: "brown-out"}


class ChipReset(Exception):
    """Unwinds the firmware to the reset vector."""

    def __init__(self, cause: int, at: float) -> None:
        super().__init__(_CAUSES.get(cause, hex(cause)))
        self.cause = cause
        self.at = at


class StartApplication(Exception):
    """The bootloader jumps to the application at address 0."""


class _Halt(Exception):
    """The simulator is shutting down."""


class Firmware(Protocol):
    """What runs from the reset vector. ``run`` returns or raises StartApplication to
    hand over to the application; ChipReset passes through it."""

    name: str

    def run(self, mcu: Mcu) -> None: ...


@dataclass(frozen=True)
class Event:
    """One line of the simulator's log; ``t`` is seconds since the simulator started."""

    t: float
    what: str


class Mcu:
    """The chip: one firmware, its memories, a receive and a transmit wire."""

    def __init__(
        self,
        firmware: Firmware,
        memory: ChipMemory,
        rx: Wire,
        tx: Wire,
        *,
        throttle: float = 1.0,
        faults: Faults | None = None,
        startup_ms: float = STARTUP_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.firmware = firmware
        self.memory = memory
        self.rx = rx
        self.tx = tx
        self.throttle = throttle
        self.faults = faults or Faults()
        self.startup = startup_ms / 1000.0
        self.clock = clock
        self.t0 = clock()
        self.now = self.t0
        self.mcusr = 0
        #: "reset", "bootloader", "application", "dead" or "stopped".
        self.state = "reset"
        self.events: list[Event] = []
        self.resets: dict[str, int] = {}
        self.app_starts = 0
        self.commands = 0
        self.tx_count = 0
        self.overruns = 0
        self.framing_errors = 0
        self._cond = rx.cond  # one lock for the chip and its receiver
        self._reset_at: float | None = None
        self._reset_cause = EXTRF
        self._halt = False
        self._uart_on_at: float | None = None
        self._wdt_period: float | None = None
        self._wdt_fed = 0.0
        self._capture: bytes | None = None  # reply override for the current command
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control (host side)

    def start(self) -> Mcu:
        """Power the chip up (power-on reset) and run it in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.firmware.name}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def external_reset(self, cause: int = EXTRF) -> None:
        """Pull RESET low now (a DTR edge, the reset button); ``cause`` PORF models a
        power cycle."""
        with self._cond:
            if self._reset_at is None:
                self._reset_at = self.clock()
                self._reset_cause = cause
            elif cause == PORF:
                # Two resets before the chip saw the first: a power cycle wins.
                self._reset_cause = PORF
            self._cond.notify_all()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._halt = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def log(self, what: str) -> None:
        self.events.append(Event(round(self.now - self.t0, 6), what))

    def wait_for_state(self, state: str, timeout: float = 2.0) -> bool:
        """Block until the chip is in ``state`` with no reset pending (for tests); False
        on timeout."""
        deadline = self.clock() + timeout
        with self._cond:
            while self.state != state or self._reset_at is not None:
                left = deadline - self.clock()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.01))
            return True

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        cause, at = PORF, self.clock()
        while True:
            try:
                self._power_up(cause, at)
                if self.faults.dead:
                    self._set_state("dead")
                    self._idle()
                self._set_state("bootloader")
                with contextlib.suppress(StartApplication):
                    self.firmware.run(self)
                self._application()
            except ChipReset as reset:
                cause, at = reset.cause, reset.at
            except _Halt:
                self._set_state("stopped")
                return

    def _power_up(self, cause: int, at: float) -> None:
        name = _CAUSES.get(cause, hex(cause))
        self.resets[name] = self.resets.get(name, 0) + 1
        self.mcusr = PORF if cause == PORF else self.mcusr | cause
        self.now = max(self.now, at)
        dropped = self.tx.cancel_from(at)
        self.log(f"{name} reset" + (f" ({dropped} bytes not sent)" if dropped else ""))
        self._set_state("reset")
        self._wdt_period = None
        self._uart_on_at = None
        self._capture = None
        self.advance(self.now + self.startup * self.throttle)
        self._wdt_fed = self.now  # the watchdog counter starts from zero after a reset

    def _set_state(self, state: str) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def _application(self) -> None:
        """The user's program: it ignores the serial line until the next reset."""
        self.app_starts += 1
        self._wdt_period = None
        self.log("application started")
        self._set_state("application")
        self._uart_on_at = None
        self._idle()

    def _idle(self) -> None:
        while True:
            self.receive(None)

    # ------------------------------------------------------------------ time

    def _pending(self, until: float = float("inf")) -> ChipReset | None:
        """The first reset (external or watchdog) due by chip time ``until``, if any."""
        events = []
        if self._reset_at is not None:
            events.append((max(self._reset_at, self.now), self._reset_cause))
        if self._wdt_period is not None:
            events.append((max(self._wdt_fed + self._wdt_period, self.now), WDRF))
        due = [e for e in events if e[0] <= until]
        if not due:
            return None
        at, cause = min(due)
        return ChipReset(cause, at)

    def _take(self, reset: ChipReset) -> None:
        with self._cond:
            self.state = "reset"
            if reset.cause != WDRF:
                self._reset_at = None
        self.now = reset.at
        raise reset

    def _wait(self, until: float, wall: float) -> None:
        self._cond.wait(None if until == float("inf") else max(until - wall, 0.0))

    def advance(self, until: float) -> None:
        """Let chip time run to ``until`` with the CPU busy, in step with the wall clock.
        Raises ChipReset if a reset or the watchdog comes first."""
        with self._cond:
            while True:
                if self._halt:
                    raise _Halt
                reset = self._pending(until)
                wall = self.clock()
                if reset is not None and reset.at <= wall:
                    self._take(reset)
                if reset is None and wall >= until:
                    self.now = max(self.now, until)
                    return
                self._wait(reset.at if reset is not None else until, wall)

    def busy(self, seconds: float) -> None:
        """The CPU waits ``seconds`` of chip time (flash programming, LED delay)."""
        self.advance(self.now + seconds * self.throttle)

    def spin(self) -> None:
        """Loop forever, as firmware does to let the watchdog reset it."""
        self.advance(float("inf"))

    # ------------------------------------------------------------------ watchdog

    def wdt_config(self, period: float | None) -> None:
        """Set the watchdog period in seconds (None = off). Like WDTCSR, this does not
        restart the count: a shorter period may expire at once."""
        self._wdt_period = period

    def wdt_reset(self) -> None:
        """The ``wdr`` instruction."""
        self._wdt_fed = self.now

    # ------------------------------------------------------------------ UART

    def uart_enable(self) -> None:
        """Bytes that arrived before this moment were not received."""
        self._uart_on_at = self.now

    def _settle_rx(self) -> None:
        """Drop bytes the receiver never took: those that came while the UART was off
        (in reset, or the application ignoring the line) and overruns."""
        on = self._uart_on_at
        if on is None:
            # Bytes after a pending reset are for whatever runs after it to judge.
            limit = self.clock()
            if self._reset_at is not None:
                limit = min(limit, self._reset_at)
            self.rx.drop_arrived(limit)
            return
        while (head := self.rx.peek()) is not None and head.due < on:
            self.rx.pop()
        if self.throttle > 0:
            lost = self.rx.drop_arrived(self.now, keep=RX_DEPTH)
            if lost:
                self.overruns += lost
                self.log(f"receiver overrun: {lost} bytes lost")

    def rx_ready(self) -> bool:
        """RXC: a received byte is waiting at chip time ``now``."""
        with self._cond:
            self.advance(self.now)
            self._settle_rx()
            head = self.rx.peek()
            return self._uart_on_at is not None and head is not None and head.due <= self.now

    def receive(self, timeout: float | None) -> WireByte | None:
        """Wait for the next received byte, at most ``timeout`` seconds of real time
        (None: for ever); None on timeout. Raises ChipReset for a reset or the watchdog
        before the byte is there."""
        with self._cond:
            self.advance(self.now)  # the wall clock must have caught up with the chip
            limit = float("inf") if timeout is None else self.now + timeout
            while True:
                if self._halt:
                    raise _Halt
                self._settle_rx()
                head = self.rx.peek()
                listening = head is not None and self._uart_on_at is not None
                arrives = head.due if listening else float("inf")
                reset = self._pending()
                reset_at = reset.at if reset is not None else float("inf")
                # Whichever comes first; on a tie the byte, then the timeout, win.
                first = min(arrives, limit, reset_at)
                wall = self.clock()
                if first <= wall:
                    if first == arrives:
                        byte = self.rx.pop()
                        self.now = max(self.now, byte.due)
                        if byte.framing_error:
                            self.framing_errors += 1
                        return byte
                    if first == limit:
                        self.now = limit
                        return None
                    assert reset is not None
                    self._take(reset)
                self._wait(first, wall)

    def transmit(self, value: int) -> None:
        """``putch``: wait until the data register is free, then hand the byte over."""
        if self._halt:
            raise _Halt
        if self._capture is not None:
            return
        reset = self._pending(self.now)
        if reset is not None:
            self._take(reset)
        # UDR is free once the previous byte has moved into the shift register.
        self.now = max(self.now, self.tx.last_start())
        self.tx_count += 1
        out = self.faults.tx_byte(self.tx_count, value)
        if out is None:
            self.log(f"byte {self.tx_count} (0x{value:02x}) not sent (fault)")
            return
        self.tx.send(bytes([out]), at=self.now)

    # ------------------------------------------------------------------ commands

    def command_begins(self, code: int) -> None:
        """The firmware's main loop read command byte ``code``: count it for faults."""
        self.commands += 1
        override = self.faults.reply_override(self.commands)
        if override is not None:
            self.log(f"command {self.commands} (0x{code:02x}): reply replaced by fault")
            self._capture = override

    def command_ends(self) -> None:
        """The command is done; send a fault's replacement reply if there is one."""
        override, self._capture = self._capture, None
        for value in override or b"":
            self.transmit(value)
