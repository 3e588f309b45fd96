"""``SimPort``: the simulator seen through pyserial's ``Serial`` interface.

It does what opening a real port on an Arduino does: pyserial asserts DTR and RTS on
open, and a line going active pulls RESET low through the board's 100 nF capacitor.
Releasing a line does nothing to the chip.

``bytesize``, ``parity`` and ``stopbits`` start at pyserial's 8N1 and may be set as on a
pyserial port; a simulator that models the character format (``set_host_format``) then
judges the host's bytes by it, so a host at the wrong parity gets parity errors.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from serial import PortNotOpenError

from flashsh.sims.wire import Wire


class SerialSim(Protocol):
    """What a port needs from a simulator."""

    to_target: Wire
    to_host: Wire
    baud: int

    def start(self) -> Any: ...
    def stop(self) -> None: ...
    def reset(self) -> None: ...
    def set_host_baud(self, baud: int) -> None: ...


class SimPort:
    """An open serial port wired to ``sim``; the sim starts with the port and stops with
    it. ``sim`` stays reachable for tests (flash contents, state, event log)."""

    def __init__(self, sim: SerialSim, baudrate: int, *, name: str = "sim") -> None:
        self.sim = sim
        self.name = name
        #: Read timeout in seconds, None = wait for ever (pyserial's meaning).
        self.timeout: float | None = None
        self.write_timeout: float | None = None
        self._baudrate = int(baudrate)
        self._format: dict[str, Any] = {"bytesize": 8, "parity": "N", "stopbits": 1}
        self._dtr = False
        self._rts = False
        self.is_open = True
        sim.set_host_baud(self._baudrate)
        self._send_format()
        sim.start()
        # Open asserts both lines, as pyserial does on a real port.
        self.dtr = True
        self.rts = True

    # ------------------------------------------------------------------ data

    def _check_open(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data`` for the target; it arrives at the line's pace."""
        self._check_open()
        payload = bytes(data)
        self.sim.to_target.send(payload)
        return len(payload)

    def read(self, size: int = 1) -> bytes:
        """Wait up to ``timeout`` for ``size`` bytes; return what arrived."""
        self._check_open()
        return self.sim.to_host.read(size, self.timeout)

    @property
    def in_waiting(self) -> int:
        self._check_open()
        return self.sim.to_host.arrived()

    @property
    def out_waiting(self) -> int:
        return 0

    def reset_input_buffer(self) -> None:
        """Forget what has arrived; bytes still on the line come in later."""
        self._check_open()
        self.sim.to_host.drop_arrived()

    def reset_output_buffer(self) -> None:
        """Nothing to do: written bytes are on the line at once."""

    def flush(self) -> None:
        """Wait until everything written has left the line."""
        self._check_open()
        left = self.sim.to_target.line_free - time.monotonic()
        if left > 0:
            time.sleep(left)

    # ------------------------------------------------------------------ settings

    @property
    def baudrate(self) -> int:
        return self._baudrate

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        value = int(value)
        if value <= 0:
            raise ValueError(f"not a valid baud rate: {value}")
        self._baudrate = value
        self.sim.set_host_baud(value)

    @property
    def bytesize(self) -> int:
        return self._format["bytesize"]

    @bytesize.setter
    def bytesize(self, value: int) -> None:
        if value not in (5, 6, 7, 8):
            raise ValueError(f"not a valid byte size: {value!r}")
        self._set_format("bytesize", value)

    @property
    def parity(self) -> str:
        return self._format["parity"]

    @parity.setter
    def parity(self, value: str) -> None:
        if value not in ("N", "E", "O", "M", "S"):
            raise ValueError(f"not a valid parity: {value!r}")
        self._set_format("parity", value)

    @property
    def stopbits(self) -> float:
        return self._format["stopbits"]

    @stopbits.setter
    def stopbits(self, value: float) -> None:
        if value not in (1, 1.5, 2):
            raise ValueError(f"not a valid stop bit length: {value!r}")
        self._set_format("stopbits", value)

    def _set_format(self, name: str, value: object) -> None:
        self._format[name] = value
        self._send_format()

    def _send_format(self) -> None:
        # Simulators that predate character formats take any host's bytes as sent.
        set_format = getattr(self.sim, "set_host_format", None)
        if set_format is not None:
            set_format(self.bytesize, self.parity, self.stopbits)

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._set_lines(bool(value), self._rts)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._set_lines(self._dtr, bool(value))

    def _set_lines(self, dtr: bool, rts: bool) -> None:
        # Boards wire RESET to DTR (Uno, most clones) or to RTS (some FTDI cables): an
        # assert edge on either counts.
        edge = (dtr and not self._dtr) or (rts and not self._rts)
        changed = (dtr, rts) != (self._dtr, self._rts)
        self._dtr, self._rts = dtr, rts
        # USB-CDC firmware sees the line state itself (Klipper's 1200-baud touch).
        set_lines = getattr(self.sim, "set_host_lines", None)
        if self.is_open and changed and set_lines is not None:
            set_lines(dtr, rts)
        if self.is_open and edge:
            self.sim.reset()

    # ------------------------------------------------------------------ life

    def close(self) -> None:
        if self.is_open:
            # Closing a tty drops DTR (HUPCL), which USB-CDC firmware sees.
            set_lines = getattr(self.sim, "set_host_lines", None)
            if set_lines is not None:
                set_lines(False, False)
            self.is_open = False
            self.sim.stop()

    def __enter__(self) -> SimPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SimPort({self.name!r}, baudrate={self._baudrate})"
