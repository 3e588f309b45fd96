"""Bootloader protocols and the auto-detection probe chain.

Each protocol is named here as a ``"module:Class"`` string and imported only when it is
tried, so adding one never touches another.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from flashsh.errors import FlashshError, NoAnswerError, ProtocolError
from flashsh.protocols.base import Bootloader
from flashsh.transports.base import ByteLink
from flashsh.transports.can import CanOptions
from flashsh.transports.usb import UsbLink

#: Byte-stream protocols in probe order at each baud rate. Safer probes go first: a
#: STK500v2 sign-on makes optiboot start the application, while the STK500v1 GET_SYNC
#: only keeps the Mega 2560 bootloader listening. The STM32 ROM comes last: the AVR
#: bootloaders listen for about a second after reset and a 0x7F ends optiboot's wait
#: (it starts the application when the byte after an unknown command is not 0x20),
#: while the ROM waits for its 0x7F for ever. The price, and how --protocol stm32 and
#: --entry avoid it, is in docs/stm32.md ("Auto-detection"). SAM-BA goes last as well:
#: its N# and V# are unknown bytes to the others, while their probes could leave the
#: monitor's parser holding a command letter that a stray '#' would run.
SERIAL_PROTOCOLS: dict[str, str] = {
    "stk500v1": "flashsh.protocols.stk500v1:Stk500v1",
    "stk500v2": "flashsh.protocols.stk500v2:Stk500v2",
    "stm32": "flashsh.protocols.stm32_uart:Stm32Uart",
    "katapult": "flashsh.protocols.katapult:Katapult",
    "klipper": "flashsh.protocols.klipper_app:KlipperApplication",
    "samba": "flashsh.protocols.samba:Samba",
}

#: A USB device that names its firmware: only that protocol is tried. Katapult and
#: Klipper (facts: docs/can.md) ignore the baud rate on USB. SAM-BA: the SAM3/SAM4 ROM
#: monitor, the Arduino Zero bootloader, and Arduino Due/Zero ports whose sketch reboots
#: into the monitor on a 1200-baud touch (flashsh.protocols.samba_entry).
USB_PROTOCOLS: dict[str, str] = {
    "1d50:6177": "katapult",
    "1d50:614e": "klipper",
    "03eb:6124": "samba",
    "2341:004d": "samba",
    "2341:003e": "samba",
    "2341:003d": "samba",
    "2341:804d": "samba",
    # uf2-samdx1 on Adafruit's SAMD51 boards (boards/*/board_config.h): Metro M4, Feather
    # M4, ItsyBitsy M4, Grand Central M4; other uf2 boards are found by the probe chain.
    "239a:0021": "samba",
    "239a:0022": "samba",
    "239a:002b": "samba",
    "239a:0031": "samba",
}

#: A probe that needs no reset of its own right after another one at the same baud rate:
#: the STK500v1 probe resets the board and its GET_SYNC bytes keep a Mega 2560 bootloader
#: listening (it waits for a message start), so the STK500v2 sign-on finds it awake.
AWAKE_AFTER: dict[str, str] = {"stk500v2": "stk500v1"}


#: Bootloaders reached through pyusb, by the kind flashsh.transports.usb gives a device.
USB_BOOTLOADERS: dict[str, str] = {
    "dfuse": "flashsh.protocols.dfuse:DfuSe",
    "dfu": "flashsh.protocols.dfu:Dfu",
    "maple": "flashsh.protocols.maple:Maple",
    "hid": "flashsh.protocols.hid_bootloader:HidBootloader",
    "halfkay": "flashsh.protocols.halfkay:HalfKay",
    "app": "flashsh.protocols.usb_app:UsbApplication",
}


def usb_session_for(link: UsbLink, *, chip: str | None = None) -> Bootloader:
    """The bootloader (or running application) on an open USB device."""
    kind = link.info.kind
    if kind == "dfu":
        from flashsh.protocols.dfu_wire import is_dfuse

        kind = "dfuse" if is_dfuse(link) else "dfu"
    spec = USB_BOOTLOADERS.get(kind)
    if spec is None:
        raise ProtocolError(
            f"{link.info.usb_id} ({link.info.what}) is not a USB bootloader flashsh speaks",
            "connect to its serial port or drive instead (docs/usb.md)",
        )
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls).attach(link, chip=chip)


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
    #: RTS/DTR sequence that puts the chip into its bootloader (STM32: --entry).
    entry: str | None = None
    #: The CAN bus a UUID target is on.
    can: CanOptions = field(default_factory=CanOptions)
    #: pyusb backend as MODULE:CALLABLE (--usb-backend); None for libusb.
    usb_backend: str | None = None


Reporter = Callable[[str], None]


def probe_plan(names: list[str], baudrate: int | None) -> list[tuple[int, str, type[Bootloader]]]:
    """(baud, name, class) in the order to try: baud rate by baud rate, and at each one
    the protocols in registry order. Trying every protocol at the common 115200 first
    finds a Mega 2560 before the line is flooded at rates it does not speak, and the
    bootloader an STK500v1 probe kept listening answers the v2 probe at once."""
    classes = [(name, protocol_class(name)) for name in names]
    if baudrate:
        return [(baudrate, name, cls) for name, cls in classes]
    bauds = list(dict.fromkeys(b for _, cls in classes for b in cls.baudrates))
    return [(b, name, cls) for b in bauds for name, cls in classes if b in cls.baudrates]


def detect(link: ByteLink, options: ProbeOptions, report: Reporter | None = None) -> Bootloader:
    """Run the probe chain on an open link and return the connected bootloader.

    Tries each protocol (or only ``options.protocol``) at each of its baud rates (or only
    ``options.baudrate``). Raises NoAnswerError naming what was tried and the likely causes.
    """
    names = list(SERIAL_PROTOCOLS) if options.protocol == "auto" else [options.protocol]
    usb_id = link.usb_id
    if options.protocol == "auto" and usb_id in USB_PROTOCOLS:
        names = [USB_PROTOCOLS[usb_id]]
    plan = probe_plan(names, options.baudrate)
    _check_options(options, {cls for _, _, cls in plan})
    tried = []
    for baud, name, cls in plan:
        if link.baudrate != baud:
            link.baudrate = baud
        # The STM32 ROM needs even parity; the AVR bootloaders none.
        link.set_format(cls.serial_format)
        if report:
            shown = "" if cls.serial_format == "8N1" else f" ({cls.serial_format})"
            report(f"trying {name} at {baud} baud{shown}")
        reset = options.reset and f"{AWAKE_AFTER.get(name)}@{baud}" not in tried
        extra = {key: getattr(options, key) for key in cls.probe_options}
        found = cls.probe(link, reset=reset, chip=options.chip, **extra)
        if found is not None:
            return found
        tried.append(f"{name}@{baud}")
    if link.heard:
        what = "any bootloader flashsh knows" if len(names) > 1 else names[0]
        raise ProtocolError(
            f"something on {link.description} answers, but not as {what} "
            f"(tried {', '.join(tried)}; it sent {link.heard.hex(' ')})",
            "the application may be running instead of the bootloader: press reset just "
            "before connecting; or set --baud to the bootloader's rate",
        )
    hint = None
    if len(names) == 1:
        hint = protocol_class(names[0]).no_answer_hint(link)
    raise NoAnswerError(
        f"no bootloader answered on {link.description} (tried {', '.join(tried)})",
        hint
        or "press reset just before connecting, check the port and the baud rate "
        "(--baud 57600 for older boards), or close programs that hold the port; "
        "an STM32 needs BOOT0 high and a reset, then --protocol stm32",
    )


def _check_options(options: ProbeOptions, classes: set[type[Bootloader]]) -> None:
    """Refuse an option no protocol being tried uses, instead of ignoring it."""
    if options.entry and not any("entry" in cls.probe_options for cls in classes):
        raise FlashshError(
            f"--entry is for the STM32 ROM bootloader, not {options.protocol}",
            "leave out --entry, or use --protocol stm32",
        )
