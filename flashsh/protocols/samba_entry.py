"""Getting into the SAM-BA monitor: the 1200-baud touch, and its USB identities.

A sketch built with the Arduino cores, and Klipper, reboot into the monitor when the
USB-CDC port is set to 1200 baud with DTR low (samba.md §6.1): the Due's native port
clears GPNVM1 and resets into the ROM (flash kept), a SAMD sketch erases its first row or
sets the double-tap magic and resets into the bootloader. The board then comes back as
another USB device. On the Due's programming port the ATmega16U2 bridge does the same
touch with the ERASE line: the whole flash is erased, then the ROM monitor answers on
the UART at 115200 (same port, no re-enumeration). The shell asks before that one.

Double-tap reset (SAMD bootloaders, §6.2) needs a finger, so it is only named in hints.
"""

from __future__ import annotations

import time

from flashsh.errors import FlashshError, NoAnswerError, UnsupportedError
from flashsh.protocols.application import RunningApplication
from flashsh.protocols.base import Bootloader, TargetInfo
from flashsh.transports.base import ByteLink

#: USB identities of SAM-BA monitors (samba.md §1; uf2-samdx1 boards each have their own
#: PID, Adafruit's under 239a:00xx, e.g. 239a:0031 Grand Central M4).
ROM_USB_ID = "03eb:6124"
ZERO_BOOTLOADER_USB_ID = "2341:004d"
#: Ports of a SAM board running an application, and the monitor that the touch brings:
#: ArduinoCore-sam / ArduinoCore-samd boards.txt (vid.N/pid.N), samba.md §6.1.
APPLICATIONS: dict[str, tuple[str | None, str]] = {
    "2341:003e": (ROM_USB_ID, "Arduino Due, native USB port"),
    "2341:804d": (ZERO_BOOTLOADER_USB_ID, "Arduino Zero, native USB port"),
    # The 16U2 bridge stays on the bus: the ROM answers behind it on the same port.
    "2341:003d": (None, "Arduino Due, programming port"),
}
ERASING_PORTS = {"2341:003d"}
#: Klipper's flash_usb.py waits up to 4 s for the port to come back.
REAPPEAR_WAIT = 4.0
#: The 16U2 holds ERASE ~500 ms, then RESET ~200 ms (samba.md §6.1).
ERASE_SETTLE = 1.0
POLL_EVERY = 0.1
ROM_BAUD = 115200


class SamApplication(RunningApplication):
    """A known SAM board on which an application answers instead of the monitor."""

    name = "samba"
    baudrates = (ROM_BAUD,)

    def __init__(self, link: ByteLink, usb_id: str, chip: str | None) -> None:
        super().__init__(link)
        self.usb_id = usb_id
        self.chip = chip
        self.monitor_id, self.board = APPLICATIONS[usb_id]

    @classmethod
    def probe(cls, link: ByteLink, *, reset: bool, chip: str | None = None) -> Bootloader | None:
        return application_for(link, chip)

    def identify(self) -> TargetInfo:
        return TargetInfo(
            protocol=self.name,
            bootloader="none: an application is running",
            chip=self.chip or "unknown",
            link=self.link.description,
            how=f"USB {self.usb_id} ({self.board}); the SAM-BA monitor did not answer",
            details={"board": self.board},
        )

    def ready(self) -> None:
        erase = " (this port erases the flash first)" if self.usb_id in ERASING_PORTS else ""
        raise UnsupportedError(
            f"an application is running on {self.link.description} ({self.board}), not "
            "the SAM-BA monitor",
            f"use `bootloader` to reboot it into the monitor{erase}, or press reset twice "
            "quickly on SAMD boards",
        )

    def request_warning(self) -> str | None:
        if self.usb_id in ERASING_PORTS:
            return (
                "the Due's programming port enters the ROM monitor by ERASING ALL OF FLASH "
                "(the 16U2 asserts ERASE); go on?"
            )
        return None

    def request_bootloader(self) -> Bootloader:
        return touch_into_monitor(
            self.link, self.usb_id, self.chip, erases=self.usb_id in ERASING_PORTS
        )


def application_for(link: ByteLink, chip: str | None) -> Bootloader | None:
    usb_id = link.usb_id
    if usb_id in APPLICATIONS:
        return SamApplication(link, usb_id, chip)
    return None


def touch_into_monitor(
    link: ByteLink, usb_id: str | None, chip: str | None, *, erases: bool
) -> Bootloader:
    """The 1200-baud touch, then the monitor's session: on the same port (Due
    programming port), or on the USB device that comes back in its place."""
    from flashsh.protocols.klipper import touch_1200
    from flashsh.protocols.samba import connect

    if not touch_1200(link):
        raise UnsupportedError(
            f"{link.description} has no modem lines for the 1200-baud touch",
            "press reset twice quickly (SAMD), or ERASE then RESET (SAM3X/SAM4)",
        )
    expected = APPLICATIONS.get(usb_id or "", (usb_id, ""))[0]
    if erases:
        time.sleep(ERASE_SETTLE)
    elif expected is not None and usb_id is not None:
        link = _reappeared(link, expected)
    link.baudrate = ROM_BAUD
    deadline = time.monotonic() + REAPPEAR_WAIT
    while True:
        link.drain(quiet=0.02, limit=0.2)
        try:
            found = connect(link, chip)
        except FlashshError:
            found = None
        if found is not None:
            found.how = "after the 1200-baud touch; " + found.how
            return found
        if time.monotonic() > deadline:
            raise NoAnswerError(
                f"the SAM-BA monitor did not answer on {link.description} after the "
                "1200-baud touch",
                "SAMD: press reset twice quickly; SAM3X/SAM4: press ERASE, then RESET",
            )
        time.sleep(POLL_EVERY)


def _reappeared(link: ByteLink, usb_id: str) -> ByteLink:
    from flashsh.transports.serial import SerialLink, reappear

    return reappear(link, usb_id, REAPPEAR_WAIT) if isinstance(link, SerialLink) else link
