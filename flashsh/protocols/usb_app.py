"""A USB device where an application (Klipper) runs instead of a bootloader.

The session stays on it after ``reset`` or a DfuSe ``leave`` brings the new firmware up,
so that ``bootloader`` can send the board back: the 1200-baud touch on its CDC port, then
following the board until it re-enumerates as a bootloader.

On a real host the kernel's cdc_acm driver owns the port, so the touch goes through the
tty that sysfs names for the device; without one (a simulated bus) it is sent as the two
CDC class requests the tty driver would send.
"""

from __future__ import annotations

import struct
from pathlib import Path

from flashsh.errors import UnsupportedError
from flashsh.protocols.application import RunningApplication
from flashsh.protocols.base import Bootloader, TargetInfo
from flashsh.protocols.usb_base import FOLLOW_TIMEOUT, UsbBootloader, accepts_bootloader
from flashsh.transports.usb import UsbLink

SET_LINE_CODING = 0x20
SET_CONTROL_LINE_STATE = 0x22
CDC_OUT = 0x21
DTR = 0x01
SYS_USB = Path("/sys/bus/usb/devices")


class UsbApplication(UsbBootloader, RunningApplication):
    name = "application"
    kinds = ("app",)

    def identify(self) -> TargetInfo:
        info = self.link.info
        product = info.product or "unknown"
        return TargetInfo(
            protocol="usb-application",
            bootloader=f"none: {info.manufacturer or 'an application'} firmware is running",
            chip=product,
            link=self.link.description,
            how=f"USB id {info.usb_id} at {info.port}",
            details={"usb_id": info.usb_id, "port": info.port, "serial": info.serial},
        )

    def ready(self) -> None:
        info = self.link.info
        raise UnsupportedError(
            f"{info.manufacturer or 'an application'} is running on {info.usb_id} at "
            f"{info.port}, not a bootloader",
            "`bootloader` reboots it into its bootloader (1200-baud touch)",
        )

    def request_bootloader(self) -> Bootloader:
        from flashsh.protocols import usb_session_for

        touch_1200(self.link)
        found = self.link.follow(accepts_bootloader, FOLLOW_TIMEOUT, "USB bootloader")
        self.link.reopen(found)
        return usb_session_for(self.link, chip=self.chip_hint)

    def follow_after_start(self) -> Bootloader | None:
        return None  # an application was never asked to leave anything


def tty_of(link: UsbLink) -> str | None:
    """The /dev/ttyACM* node the kernel made for the device's CDC interface, if any."""
    port = link.info.port
    for interface in sorted(SYS_USB.glob(f"{port}:*")):
        for tty in sorted((interface / "tty").glob("*")):
            return f"/dev/{tty.name}"
    return None


def touch_1200(link: UsbLink) -> None:
    """Klipper reboots when the line coding says 1200 baud with DTR low. DTR is raised
    first so that dropping it is the trigger, as Klipper's flash_usb.py does."""
    tty = tty_of(link)
    if tty is not None:
        import serial

        with serial.Serial(tty, 115200) as port:
            port.dtr = True
            port.baudrate = 1200
            port.dtr = False
        return
    link.control_out(CDC_OUT, SET_CONTROL_LINE_STATE, DTR, 0, what="raising DTR")
    coding = struct.pack("<IBBB", 1200, 0, 0, 8)
    link.control_out(CDC_OUT, SET_LINE_CODING, 0, 0, coding, what="setting 1200 baud")
    link.control_out(CDC_OUT, SET_CONTROL_LINE_STATE, 0, 0, what="dropping DTR")
