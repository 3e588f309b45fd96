"""A node or port where Klipper firmware runs instead of a bootloader.

flashsh talks to it only to say so and to ask it to reboot into Katapult (``bootloader``);
memory commands refuse with that advice instead of failing halfway.
"""

from __future__ import annotations

from typing import Protocol

from flashsh.errors import UnsupportedError
from flashsh.protocols.application import RunningApplication
from flashsh.protocols.base import Bootloader, TargetInfo
from flashsh.transports.base import ByteLink


class Door(Protocol):
    def request_bootloader(self, current: Bootloader) -> Bootloader: ...


class KlipperApplication(RunningApplication):
    name = "klipper"
    baudrates = (250000,)

    def __init__(
        self,
        link: ByteLink,
        door: Door,
        *,
        where: str = "",
        mcu: str | None = None,
        version: str | None = None,
    ) -> None:
        super().__init__(link)
        self.door = door
        self.where = where or link.description
        self.mcu = mcu
        self.version = version

    @classmethod
    def probe(
        cls, link: ByteLink, *, reset: bool, chip: str | None = None
    ) -> KlipperApplication | None:
        """Klipper's ``identify`` command: only a Klipper answers it."""
        from flashsh.protocols.katapult_entry import SerialDoor
        from flashsh.protocols.klipper import probe_klipper

        found = probe_klipper(link)
        if found is None:
            return None
        return cls(link, SerialDoor(link, chip), mcu=found.mcu, version=found.version)

    def identify(self) -> TargetInfo:
        details: dict[str, object] = {"firmware": f"Klipper {self.version or '(version unknown)'}"}
        return TargetInfo(
            protocol="klipper",
            bootloader="none: Klipper firmware is running",
            chip=self.mcu or "unknown",
            link=self.link.description,
            baudrate=self.link.baudrate if self.link.usb_id is None else None,
            how="answered as Klipper firmware",
            details=details,
        )

    def ready(self) -> None:
        raise UnsupportedError(
            f"Klipper firmware is running on {self.where}, not a bootloader",
            "use `bootloader` to reboot it into Katapult",
        )

    def request_bootloader(self) -> Bootloader:
        return self.door.request_bootloader(self)
