"""The byte-stream link every serial bootloader protocol talks through."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod


def parse_format(fmt: str) -> tuple[int, str, int, str]:
    """``"8e1"`` -> (8, "E", 1, "8E1"): data bits, parity letter, stop bits, canonical text.
    Raises ValueError for anything else."""
    text = fmt.strip().upper()
    if len(text) != 3 or text[0] not in "5678" or text[1] not in "NEO" or text[2] not in "12":
        raise ValueError(f"not a serial format: {fmt!r} (expected e.g. 8N1 or 8E1)")
    return int(text[0]), text[1], int(text[2]), text


class ByteLink(ABC):
    """A full-duplex byte stream with a reset line.

    Protocols see only this interface, never pyserial, so an in-process simulator, a pty,
    a network port and a USB-serial adapter all look the same to them.
    """

    #: What the user asked for, shown by ``info`` and in errors ("/dev/ttyACM0").
    description: str = ""
    #: The first bytes ever received, kept so that auto-detection can tell "silent" from
    #: "something answers, but not a bootloader we know".
    heard: bytes = b""
    #: Character format on the wire: data bits, parity (N, E, O), stop bits.
    serial_format: str = "8N1"
    #: ``vid:pid`` of a USB device behind the link (Katapult 1d50:6177), else None.
    usb_id: str | None = None

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes; returns once they are queued for the wire."""

    @abstractmethod
    def read(self, size: int, timeout: float) -> bytes:
        """Read up to ``size`` bytes, waiting at most ``timeout`` seconds in all.

        Returns fewer bytes (possibly none) when the time runs out.
        """

    @abstractmethod
    def discard_input(self) -> None:
        """Throw away whatever has been received and not read."""

    @property
    @abstractmethod
    def baudrate(self) -> int: ...

    @baudrate.setter
    @abstractmethod
    def baudrate(self, value: int) -> None: ...

    @abstractmethod
    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> bool:
        """Assert (True) or release (False) the modem lines.

        Returns False when the link has no modem lines (a pty, a network port): callers go
        on without a hardware reset rather than fail.
        """

    @abstractmethod
    def close(self) -> None: ...

    def set_format(self, fmt: str) -> None:
        """Use the character format ``fmt`` ("8N1", "8E1") from now on.

        The STM32 ROM bootloader needs even parity, the AVR bootloaders none. Links where
        the format means nothing (an in-process byte pipe) just remember it. Raises
        ValueError for a format that is not data bits, N/E/O and stop bits.
        """
        self.serial_format = parse_format(fmt)[3]

    def format_in_effect(self) -> str | None:
        """The format the operating system reports for the port, or None if it cannot
        tell. A pty or a UART without parity hardware reads back without the parity that
        was asked for."""
        return None

    def remember(self, data: bytes) -> bytes:
        """Keep the first bytes received (subclasses call this from ``read``)."""
        if data and len(self.heard) < 16:
            self.heard = (self.heard + data)[:16]
        return data

    def drain(self, quiet: float = 0.05, limit: float = 1.0) -> int:
        """Discard input until nothing arrives for ``quiet`` seconds; return the count."""
        dropped = 0
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            chunk = self.read(4096, quiet)
            if not chunk:
                break
            dropped += len(chunk)
        return dropped

    def pulse_reset(
        self, discharge: float = 0.25, pulse: float = 0.0001, settle: float = 0.1
    ) -> bool:
        """Reset an Arduino-style board through DTR/RTS and its 100 nF capacitor.

        Release both lines (lets the capacitor discharge), assert briefly, release, wait for
        the bootloader to start. A short pulse, as avrdude 7.3+ does: a long one charges the
        capacitor and makes a spike above Vcc on release. Returns False without waiting when
        the link has no modem lines.
        """
        if not self.set_lines(dtr=False, rts=False):
            return False
        time.sleep(discharge)
        self.set_lines(dtr=True, rts=True)
        time.sleep(pulse)
        self.set_lines(dtr=False, rts=False)
        time.sleep(settle)
        return True

    def __enter__(self) -> ByteLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
