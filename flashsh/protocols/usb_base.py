"""What every bootloader reached through pyusb shares: how it is attached to a device,
and how the session follows the board when it reboots and comes back on the bus.

A USB bootloader never probes a byte stream; :func:`flashsh.protocols.detect_usb` picks
its class from the device's USB id or DFU interface and calls :meth:`UsbBootloader.attach`.
"""

from __future__ import annotations

from typing import ClassVar

from flashsh.errors import UnsupportedError
from flashsh.protocols.base import Bootloader
from flashsh.transports.base import ByteLink
from flashsh.transports.usb import DeviceGone, UsbDeviceInfo, UsbLink

#: How long a rebooting board may take to come back on the bus. Klipper's flash_usb.py
#: waits 4 s for the port; a chip that runs a bootloader first (Maple) takes longer.
FOLLOW_TIMEOUT = 6.0


class UsbBootloader(Bootloader):
    #: Kinds (transports.usb.KNOWN_DEVICES) this class serves.
    kinds: ClassVar[tuple[str, ...]] = ()
    link: UsbLink  # type: ignore[assignment]

    def __init__(self, link: UsbLink) -> None:  # type: ignore[override]
        self.link = link  # type: ignore[assignment]

    @classmethod
    def probe(cls, link: ByteLink, *, reset: bool, chip: str | None = None) -> Bootloader | None:
        return None  # reached through USB ids, never through a serial probe

    @classmethod
    def attach(cls, link: UsbLink, *, chip: str | None = None) -> UsbBootloader:
        """Talk to the device ``link`` holds; raise when it does not behave as this
        bootloader."""
        bootloader = cls(link)
        bootloader.chip_hint = chip
        bootloader.start()
        return bootloader

    chip_hint: str | None = None

    def start(self) -> None:
        """Claim the interface and bring the device to its idle state."""
        return None

    def reconnect(self) -> None:
        """After the board left (``reset``): wait for it to come back as this bootloader."""
        info = self.link.follow(lambda found: found.kind in self.kinds, FOLLOW_TIMEOUT,
                                f"{self.name} bootloader")  # fmt: skip
        self.link.reopen(info)
        self.start()

    def follow_after_start(self) -> Bootloader | None:
        """Follow the board after ``start_application``: the session continues on what
        comes back (the application, or the bootloader again), or None when nothing
        known returns in time."""
        from flashsh.protocols import usb_session_for

        try:
            info = self.link.follow(lambda found: True, FOLLOW_TIMEOUT, "device")
        except DeviceGone:
            return None
        self.link.reopen(info)
        return usb_session_for(self.link, chip=self.chip_hint)

    def request_bootloader(self) -> Bootloader:
        raise UnsupportedError(f"{self.name} is a bootloader already")


def accepts_bootloader(found: UsbDeviceInfo) -> bool:
    return found.kind in ("dfuse", "dfu", "maple", "hid", "halfkay")
