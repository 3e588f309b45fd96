"""A ByteLink for wire-level tests: what the fake device answers waits in ``inbox``."""

from __future__ import annotations

from flashsh.transports.base import ByteLink


class InboxLink(ByteLink):
    """Reads come from ``inbox``; subclasses decide in ``write`` what to put there."""

    description = "scripted"

    def __init__(self) -> None:
        self.inbox = bytearray()

    def read(self, size: int, timeout: float) -> bytes:
        data = bytes(self.inbox[:size])
        del self.inbox[:size]
        return self.remember(data)

    def discard_input(self) -> None:
        self.inbox.clear()

    @property
    def baudrate(self) -> int:
        return 115200

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        pass

    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> bool:
        return False

    def close(self) -> None:
        pass
