"""Getting to Katapult: on a CAN bus by UUID, and from a running Klipper over CAN, a
UART or USB-CDC (Klipper's bootloader request, then waiting for Katapult to answer)."""

from __future__ import annotations

import time
from typing import Any

from flashsh.errors import FlashshError, NoAnswerError
from flashsh.protocols.base import Bootloader
from flashsh.protocols.katapult import Katapult
from flashsh.protocols.klipper_app import KlipperApplication
from flashsh.transports.base import ByteLink
from flashsh.transports.can import CanBus
from flashsh.transports.usb import UsbLink

#: A node asked to reboot needs a moment before Katapult listens; flashtool waits 1 s
#: once, flashsh polls and stops as soon as it answers.
REBOOT_WAIT = 4.0
POLL_TIMEOUT = 0.25
#: Between clearing ids and assigning one, so the node handles them in that order.
ASSIGN_SETTLE = 0.02
#: How long a node that fell silent gets to answer the roll call.
REJOIN_WINDOW = 0.3
KATAPULT_USB_ID = "1d50:6177"
KLIPPER_USB_ID = "1d50:614e"
#: Klipper on a SAM board without Katapult reboots into the chip's SAM-BA monitor: the
#: SAM3/SAM4 ROM or the Arduino Zero bootloader (samba_entry).
SAMBA_USB_IDS = ("03eb:6124", "2341:004d")


class CanDoor:
    """A node on a CAN bus, addressed by its UUID."""

    def __init__(self, bus: CanBus, uuid: str, chip: str | None = None) -> None:
        self.bus = bus
        self.uuid = uuid
        self.chip = chip

    def katapult(self, *, timeout: float = 0.4, attempts: int = 2) -> Katapult:
        """Clear ids, give this UUID the node id, CONNECT. Raises NoAnswerError."""
        self.bus.clear_katapult_ids()
        time.sleep(ASSIGN_SETTLE)
        self.bus.assign(self.uuid)
        time.sleep(ASSIGN_SETTLE)
        node = Katapult(self.bus.node_link(self.uuid), uuid=self.uuid, door=self, chip=self.chip)
        node.connect(timeout=timeout, attempts=attempts)
        node.how = f"UUID {self.uuid} given node id 0x81 on {self.bus.description}"
        return node

    def rejoin(self) -> str:
        """Ask the bus who ``uuid`` is now; give it the node id again if it is Katapult."""
        for node in self.bus.query(window=REJOIN_WINDOW):
            if node.uuid == self.uuid:
                if node.application == "Katapult":
                    self.bus.assign(self.uuid)
                    time.sleep(ASSIGN_SETTLE)
                    return "katapult"
                return "klipper" if node.application == "Klipper" else ""
        return ""

    def request_bootloader(self, current: Bootloader) -> Katapult:
        self.bus.request_bootloader(self.uuid)
        return _poll(lambda: self.katapult(timeout=POLL_TIMEOUT, attempts=1), self.uuid)


def open_can_node(bus: CanBus, uuid: str, chip: str | None = None) -> Bootloader:
    """The Katapult session for ``uuid``, or a KlipperApplication when the node answers
    a query as Klipper. Raises NoAnswerError naming what to check."""
    door = CanDoor(bus, uuid, chip)
    try:
        return door.katapult()
    except NoAnswerError:
        pass
    for node in bus.query(window=0.5):
        if node.uuid == uuid and node.application == "Klipper":
            return KlipperApplication(bus.node_link(uuid), door, where=f"node {uuid}")
    raise NoAnswerError(
        f"no Katapult node {uuid} answered on {bus.description}",
        "`query` lists the nodes that answer; a node klippy is using answers no query: "
        "use `bootloader` to reboot it into Katapult, or stop klippy; check the bitrate "
        "(--bitrate) and the wiring",
    )


class SerialDoor:
    """A board on a serial port: a UART at the link's rate, or USB-CDC."""

    def __init__(self, link: ByteLink, chip: str | None = None) -> None:
        self.link = link
        self.chip = chip

    def request_bootloader(self, current: Bootloader) -> Bootloader:
        from flashsh.protocols.klipper import request_serial_bootloader, touch_1200

        link = self.link
        if link.usb_id is None:
            request_serial_bootloader(link)
            return _poll(lambda: self.katapult(link), link.description)
        # USB-CDC: Klipper reboots when the line coding becomes 1200 baud with DTR low,
        # into Katapult if the board has it, else into the chip's own bootloader (the
        # SAM-BA monitor on SAM boards); the board comes back as another USB device.
        baud = link.baudrate
        touch_1200(link)
        found = _reappeared(link, [KATAPULT_USB_ID, *SAMBA_USB_IDS], elsewhere=True)
        if isinstance(found, UsbLink):
            # No Katapult: Klipper started the chip's own USB bootloader (ST's DFU,
            # stm32duino, the HID bootloader), which has no serial port.
            from flashsh.protocols import usb_session_for

            return usb_session_for(found, chip=self.chip)
        link = self.link = found
        link.baudrate = baud
        if link.usb_id in SAMBA_USB_IDS:
            return _poll(lambda: _samba(link, self.chip), link.description)
        return _poll(lambda: self.katapult(link), link.description)

    def rejoin(self) -> str:
        return ""  # a port has no roll call; the error says what to check

    def katapult(self, link: ByteLink) -> Katapult:
        node = Katapult(link, door=self, chip=self.chip)
        node.connect(timeout=POLL_TIMEOUT, attempts=1)
        node.how = "CONNECT answered after Klipper's bootloader request"
        return node


def _samba(link: ByteLink, chip: str | None) -> Bootloader:
    from flashsh.protocols.samba import connect

    found = connect(link, chip)
    if found is None:
        raise NoAnswerError(f"the SAM-BA monitor did not answer on {link.description}")
    return found


def _reappeared(link: ByteLink, usb_id: str | list[str], *, elsewhere: bool = False) -> Any:
    """The link to what came back; with ``elsewhere``, possibly a UsbLink to a USB
    bootloader at the same port."""
    from flashsh.transports.serial import SerialLink, reappear
    from flashsh.transports.usb import bootloader_at_port

    if not isinstance(link, SerialLink):
        return link
    look = bootloader_at_port if elsewhere else None
    return reappear(link, usb_id, REBOOT_WAIT, elsewhere=look)


def _poll(attempt, where: str) -> Bootloader:
    deadline = time.monotonic() + REBOOT_WAIT
    time.sleep(0.05)
    while True:
        try:
            return attempt()
        except FlashshError:
            if time.monotonic() > deadline:
                raise NoAnswerError(
                    f"{where} did not come back in Katapult within {REBOOT_WAIT:.0f} s",
                    "the board may have no Katapult installed (Klipper then falls back to "
                    "the chip's own bootloader), or it runs a Klipper build without "
                    "bootloader requests: reset it twice quickly",
                ) from None
