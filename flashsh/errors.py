"""Error hierarchy.

Every error carries one line that says what went wrong and, where there is one, what to try.
The shell prints ``str(error)``; scripts print it behind ``FILE:LINE:``.
"""

from __future__ import annotations


class FlashshError(Exception):
    """Root of every error flashsh reports to the user."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class TransportError(FlashshError):
    """The link itself failed: no such port, no permission, device gone."""


class ProtocolError(FlashshError):
    """The other end answered, but not as the protocol says it should."""


class NoAnswerError(ProtocolError):
    """The other end said nothing within the timeout."""


class TargetError(FlashshError):
    """A request the target cannot honour: bad address, region, size."""


class UnsupportedError(TargetError):
    """The bootloader has no way to do what was asked."""


class ImageError(FlashshError):
    """A firmware file could not be read or does not fit the target."""


class VerifyError(FlashshError):
    """What the chip holds differs from what was expected."""


class Interrupted(FlashshError):
    """The user pressed Ctrl-C; the message says what was done before the stop."""
