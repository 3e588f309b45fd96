"""Bootloaders that show up as a drive: UF2 drives (uf2-samdx1 on SAMD21/SAMD51, the
RP2040 boot ROM) and the STM32F103 "MSC bootloader", which takes a raw .bin.

There are no commands: a file copied to the drive is the program operation, and the
drive vanishing (the board resets into its application) is the only answer. So pages
from ``operations.program`` are collected by ``write_page`` and ``finish_writes`` writes
them as one new file in one pass, syncs it, and waits for the drive to go:

- UF2 drive: one 256-byte block per page with the drive's family ID (a ``.uf2`` whose
  family matches and whose blocks already have that form is copied unchanged). The
  bootloader resets once it has every block, so writes the system makes after the last
  one may fail: that, with the drive gone, is success.
- STM32 MSC bootloader: the image from the application start as one contiguous .bin.
  It flashes data sectors in the order they arrive, from the first that starts with a
  stack pointer, and resets 500 ms after the last; a second file in the same session
  would land behind the first, so there is none.

The two kinds are :class:`flashsh.protocols.msc_uf2.Uf2Drive` and
:class:`flashsh.protocols.msc_stm32.StmMscDrive`; facts in docs/protocols/uf2-msc.md.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

from flashsh.errors import TargetError, TransportError, UnsupportedError
from flashsh.protocols.base import Bootloader, Capability, Region
from flashsh.transports.msc import is_msc_bootloader, open_volume, read_info
from flashsh.transports.msc_volume import DriveVolume, Mounts, WriteFailed, read_mounts

if TYPE_CHECKING:
    pass

#: How long a drive may take to vanish after the file is synced. uf2-samdx1 resets just
#: after the last block, the RP2040 ROM 1 s after it, the MSC bootloader 500 ms after
#: the last sector; the rest is the kernel noticing (UNCONFIRMED: no figure measured).
VANISH_TIMEOUT = 10.0
VANISH_POLL = 0.1


class MscDrive(Bootloader):
    """What both kinds of drive share: collecting pages, writing them as one file, and
    waiting for the drive to leave."""

    name: ClassVar[str] = "msc"
    capabilities = Capability.WRITE
    #: Who the messages speak of ("the RP2040 UF2 drive").
    what: str = "the drive"
    after_start = "the board runs its application; double-tap reset to bring the drive back"
    #: Seconds to wait for the drive to vanish after the write (tests set 0).
    vanish_timeout: float = VANISH_TIMEOUT

    def __init__(
        self, volume: DriveVolume, target: str, chip: str | None, mounts: Mounts = read_mounts
    ) -> None:
        super().__init__(volume)  # type: ignore[arg-type]
        self.volume = volume
        self.target = target
        self.chip_option = chip
        self._mounts = mounts
        self._notes: list[str] = []
        self.pages: dict[int, bytes] = {}
        #: The board left after a write (reset into its application).
        self.left = False
        #: The last file written: its name, size, and a write error forgiven because the
        #: drive left after all data was out (``late_error``).
        self.last_write: dict[str, object] = {}

    # ------------------------------------------------------------ opening

    @classmethod
    def probe(cls, link: object, *, reset: bool, chip: str | None = None) -> Bootloader | None:
        return None  # a drive is opened by its TARGET, never probed on a serial link

    @classmethod
    def open_drive(
        cls, target: str, chip: str | None = None, mounts: Mounts = read_mounts
    ) -> MscDrive:
        """Open the drive ``target`` names and tell which bootloader it is: INFO_UF2.TXT
        makes it a UF2 drive, a known volume label the STM32 MSC bootloader. ``chip``
        (``--chip``) names the family (``samd51``) or MSC build (``maplemini``) when the
        drive does not say. Raises TransportError or TargetError."""
        volume = open_volume(target, mounts)
        try:
            return cls.on_volume(volume, target, chip, mounts)
        except BaseException:
            volume.close()
            raise

    @classmethod
    def on_volume(
        cls, volume: DriveVolume, target: str, chip: str | None = None, mounts: Mounts = read_mounts
    ) -> MscDrive:
        info = read_info(volume)
        if info is not None:
            from flashsh.protocols.msc_uf2 import Uf2Drive

            return Uf2Drive(volume, target, chip, mounts, info)
        if is_msc_bootloader(volume.label, volume.names()):
            from flashsh.protocols.msc_stm32 import StmMscDrive

            return StmMscDrive(volume, target, chip, mounts)
        raise TargetError(
            f"{volume.description} is no bootloader drive: it has no INFO_UF2.TXT and its "
            f"label {volume.label or '(none)'} is not an STM32 MSC bootloader's",
            "double-tap reset to start the bootloader, and give its drive",
        )

    # ------------------------------------------------------------ the interface

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        """Keep the page; ``finish_writes`` sends them all as one file."""
        self.pages[address] = bytes(data)

    def finish_writes(self) -> None:
        pages, self.pages = sorted(self.pages.items()), {}
        if not pages:
            return
        name, content = self.file_for(pages)
        self.write_file(name, content)

    def ready(self) -> None:
        """Refuse, with what to do, once the board has left; take the drive again if it
        came back at the same place."""
        if self.left and not self._came_back():
            raise TargetError(
                f"the bootloader drive {self.volume.description} has gone: the board runs "
                "its application",
                "double-tap reset to bring the drive back, then try again",
            )

    def reconnect(self) -> None:
        self.ready()

    def start_application(self) -> None:
        if self.left:
            return  # it started the application by itself after the write
        raise UnsupportedError(
            f"{self.what} cannot be told to start the application",
            "press reset once; the board also starts it by itself after `program`",
        )

    def read(self, region: Region, address: int, length: int) -> bytes:
        raise UnsupportedError(f"{self.what} cannot read flash", self.no_read_reason)

    def write_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        self.volume.close()

    # ------------------------------------------------------------ for the kinds

    @abstractmethod
    def file_for(self, pages: list[tuple[int, bytes]]) -> tuple[str, bytes]:
        """The file name and content that carry ``pages`` to this bootloader."""

    @abstractmethod
    def not_gone_error(self, name: str) -> TargetError:
        """What to say when the drive is still there after the write."""

    def write_file(self, name: str, content: bytes) -> None:
        """Write ``content`` as a new file in one pass, synced, then wait for the drive
        to vanish. An error after all data was handed over is forgiven when the drive
        then vanishes: the bootloader reset before the system finished its own writes."""
        late: WriteFailed | None = None
        try:
            self.volume.write_new(name, content)
        except WriteFailed as failed:
            if not failed.data_written and not self.volume.gone():
                raise TransportError(
                    f"writing {name} to {self.volume.description} failed: "
                    f"{failed.error.strerror or failed.error}",
                    "check that the drive is still there and not read-only, then try again",
                ) from failed
            late = failed
        self.last_write = {"file": name, "bytes": len(content)}
        if not self.volume.has_device:
            self._notes.append(f"wrote {name} to the image file {self.volume.description}")
            return
        if not self._wait_until_gone():
            if late is not None:
                raise TransportError(
                    f"writing {name} to {self.volume.description} failed: "
                    f"{late.error.strerror or late.error}",
                    "check that the drive is still there and not read-only, then try again",
                ) from late
            raise self.not_gone_error(name)
        self.left = True
        if late is not None:
            if not late.data_written:
                raise TransportError(
                    f"{self.volume.description} left before all of {name} was written "
                    f"({late.error.strerror or late.error})",
                    "double-tap reset and program again",
                )
            error = late.error.strerror or str(late.error)
            self.last_write["late_error"] = error
            self._notes.append(
                f"the drive left before the system had finished writing ({error}); all of "
                f"{name} was out, so that is the board restarting, not a failure"
            )

    def _wait_until_gone(self) -> bool:
        deadline = time.monotonic() + self.vanish_timeout
        while not self.volume.gone():
            if time.monotonic() >= deadline:
                return False
            time.sleep(VANISH_POLL)
        return True

    def _came_back(self) -> bool:
        """Open ``target`` again; True when the same kind of drive answers there."""
        try:
            again = MscDrive.open_drive(self.target, self.chip_option, self._mounts)
        except (TransportError, TargetError):
            return False
        same = type(again) is type(self) and again.identify().chip == self.identify().chip
        if not same or again.volume.gone():
            again.close()
            return False
        self.volume.close()
        self.volume = self.link = again.volume  # type: ignore[assignment]
        self.left = False
        self.reopened(again)
        return True

    def reopened(self, again: MscDrive) -> None:
        """Take over what ``again`` found on the drive that came back."""
        return None
