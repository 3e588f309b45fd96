"""Bootloader protocols and the auto-detection probe chain.

Each protocol is named here as a ``"module:Class"`` string and imported only when it is
tried, so adding one never touches another.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from flashsh.errors import FlashshError, NoAnswerError, ProtocolError
from flashsh.protocols.base import Bootloader
from flashsh.transports.base import ByteLink

#: Byte-stream protocols in probe order. Safer, more specific probes go first.
SERIAL_PROTOCOLS: dict[str, str] = {
    "stk500v1": "flashsh.protocols.stk500v1:Stk500v1",
}


def protocol_class(name: str) -> type[Bootloader]:
    try:
        spec = SERIAL_PROTOCOLS[name]
    except KeyError:
        known = ", ".join(["auto", *SERIAL_PROTOCOLS])
        raise FlashshError(f"unknown protocol {name!r}", f"choose one of: {known}") from None
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)


@dataclass
class ProbeOptions:
    protocol: str = "auto"
    baudrate: int | None = None
    reset: bool = True
    chip: str | None = None


Reporter = Callable[[str], None]


def detect(link: ByteLink, options: ProbeOptions, report: Reporter | None = None) -> Bootloader:
    """Run the probe chain on an open link and return the connected bootloader.

    Tries each protocol (or only ``options.protocol``) at each of its baud rates (or only
    ``options.baudrate``). Raises NoAnswerError naming what was tried and the likely causes.
    """
    names = list(SERIAL_PROTOCOLS) if options.protocol == "auto" else [options.protocol]
    tried = []
    for name in names:
        cls = protocol_class(name)
        for baud in [options.baudrate] if options.baudrate else list(cls.baudrates):
            link.baudrate = baud
            if report:
                report(f"trying {name} at {baud} baud")
            found = cls.probe(link, reset=options.reset, chip=options.chip)
            if found is not None:
                return found
            tried.append(f"{name}@{baud}")
    if link.heard:
        raise ProtocolError(
            f"something on {link.description} answers, but not as any bootloader flashsh "
            f"knows (tried {', '.join(tried)}; it sent {link.heard.hex(' ')})",
            "the application may be running instead of the bootloader: press reset just "
            "before connecting; or set --baud to the bootloader's rate",
        )
    raise NoAnswerError(
        f"no bootloader answered on {link.description} (tried {', '.join(tried)})",
        "press reset just before connecting, check the port and the baud rate "
        "(--baud 57600 for older boards), or close programs that hold the port",
    )
