"""The one small interface every bootloader protocol implements.

The command layer only ever talks to a :class:`Bootloader`; it never knows which protocol
is on the other end. What a bootloader can and cannot do is declared in
:class:`Capability` flags, so commands can refuse plainly instead of failing halfway.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Flag, auto
from typing import TYPE_CHECKING, ClassVar

from flashsh.errors import TargetError, UnsupportedError
from flashsh.numbers import hexaddr
from flashsh.transports.base import ByteLink

if TYPE_CHECKING:
    from flashsh.images import Image


class Capability(Flag):
    READ = auto()  # memories can be read back (verify, diff, read_bank)
    WRITE = auto()
    CHIP_ERASE = auto()  # a real erase of the whole application area
    PAGE_ERASE_ON_WRITE = auto()  # each page is erased as it is written
    EEPROM = auto()
    FUSES = auto()  # fuse and lock bytes can be read and written
    SIGNATURE_FROM_SILICON = auto()  # the signature is read from the chip, not compiled in
    KEEP_ALIVE = auto()  # needs traffic while idle or it leaves the bootloader
    PAGE_ERASE = auto()  # erase_range() erases pages or sectors on request
    ERASE_BEFORE_WRITE = auto()  # flash must be erased before it is written (no auto-erase)
    PROTECTION = auto()  # set_protection() / read_options(): write and read-out protection


@dataclass(frozen=True)
class Region:
    """A memory as the user addresses it: ``flash`` (bank 0), ``eeprom`` (bank 1), …"""

    name: str
    start: int
    size: int
    page_size: int
    erase_size: int
    access: str = "rw"  # "rw", "r" or "w"
    bank: int = 0

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.start + self.size

    def contains(self, address: int, length: int = 1) -> bool:
        return self.start <= address and address + length <= self.end


@dataclass(frozen=True)
class MemoryMap:
    regions: tuple[Region, ...]
    #: Byte range [start, end) of flash the bootloader occupies; never written or erased.
    bootloader: tuple[int, int] | None = None
    #: Where an application image goes when no address is given.
    app_start: int = 0
    #: The bootloader starts only an image that begins exactly at ``app_start``.
    app_start_fixed: bool = False
    #: Said when an image is too large, where the flash size is a guess.
    size_hint: str | None = None

    def region(self, key: str | int) -> Region:
        """Find a region by name (``flash``) or OpenOCD-style bank number (``0``)."""
        for region in self.regions:
            if key == region.name or key == region.bank or str(key) == str(region.bank):
                return region
        names = ", ".join(f"{r.bank}={r.name}" for r in self.regions)
        raise TargetError(f"no memory region {key!r} on this target", f"regions: {names}")

    @property
    def flash(self) -> Region:
        return self.region("flash")

    def writable_end(self) -> int:
        """First flash address the application may not use: a bootloader above the
        application ends it, one at the start of flash (below ``app_start``) does not."""
        if self.bootloader and self.bootloader[0] >= self.app_start:
            return self.bootloader[0]
        return self.flash.end

    def region_for(self, address: int) -> Region:
        for region in self.regions:
            if region.contains(address):
                return region
        raise TargetError(f"address {hexaddr(address)} is in no memory region")


@dataclass
class TargetInfo:
    """What was found and how; ``info`` prints it, ``--json`` emits it."""

    protocol: str
    bootloader: str
    chip: str
    link: str
    baudrate: int | None = None
    how: str = ""
    details: dict[str, object] = field(default_factory=dict)


Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""


class Bootloader(ABC):
    """One bootloader protocol spoken over one link.

    Subclasses implement page-level operations; the session layer does alignment, padding,
    diffing, verification, progress and Ctrl-C. Protocol code never prints or prompts.
    """

    #: Registry name, used by ``--protocol``.
    name: ClassVar[str]
    #: Baud rates auto-detection tries, most common first.
    baudrates: ClassVar[tuple[int, ...]] = ()
    #: Character format the probe needs; detection sets it before each probe.
    serial_format: ClassVar[str] = "8N1"
    #: ProbeOptions fields besides ``reset`` and ``chip`` that ``probe`` takes as keywords.
    probe_options: ClassVar[tuple[str, ...]] = ()
    capabilities: Capability = Capability(0)
    #: ``program ... reset`` reads back before starting: the protocol refuses to start
    #: an application it has not seen verified.
    verify_before_start: ClassVar[bool] = False
    #: What happens after ``reset``, as ``reset`` tells it.
    after_start: ClassVar[str] = "the next command resets the board into the bootloader"
    #: Why the bootloader cannot read back, for one without Capability.READ: verify,
    #: diff and read_bank give it as the reason they are refused.
    no_read_reason: ClassVar[str | None] = None

    def __init__(self, link: ByteLink) -> None:
        self.link = link

    @classmethod
    @abstractmethod
    def probe(cls, link: ByteLink, *, reset: bool, chip: str | None = None) -> Bootloader | None:
        """Try, without changing anything on the target, whether this protocol answers
        at the link's current settings. Returns a connected instance or None."""

    @classmethod
    def no_answer_hint(cls, link: ByteLink) -> str | None:
        """The likely causes to name when only this protocol was tried and nothing
        answered; None for the generic hint."""
        return None

    @abstractmethod
    def identify(self) -> TargetInfo: ...

    @abstractmethod
    def memory_map(self) -> MemoryMap: ...

    @abstractmethod
    def read(self, region: Region, address: int, length: int) -> bytes:
        """Read ``length`` bytes at absolute ``address``; at most one page per call is
        typical, the session splits larger reads."""

    @abstractmethod
    def write_page(self, region: Region, address: int, data: bytes) -> None:
        """Write exactly one page at a page-aligned absolute address."""

    def crc_matches(self, region: Region, address: int, data: bytes) -> bool | None:
        """Whether the chip holds ``data`` at ``address``, checked on the chip (a CRC)
        without reading it back; None when the bootloader cannot tell. A False is
        followed by a read-back, which names the first difference."""
        return None

    def check_image(self, image: Image) -> None:
        """Raise ImageError when the image cannot run on this target as placed (a
        vector table made for another address, a Klipper build for another MCU).
        ``program ... force`` skips this."""
        return None

    def check_request(self, image: Image, *, diff: bool) -> None:
        """Raise before anything is written when the bootloader cannot write ``image`` as
        asked at all (an address none of its targets serves, a ``diff`` it cannot honour).
        Runs before the fit check; ``force`` does not skip it."""
        return None

    def write_notes(self) -> list[str]:
        """What the user should hear about the transfer that just ended (older data left
        behind the image, a page erased besides it); each note is given once."""
        return []

    def request_warning(self) -> str | None:
        """The question to ask before ``request_bootloader`` when it destroys data."""
        return None

    def finish_writes(self) -> None:
        """Called once after the last page of a transfer (Katapult: SEND_EOF, which
        flushes pages the node still buffers)."""
        return None

    def ready(self) -> None:
        """Raise, with what to do instead, when memory commands cannot run (an
        application, not a bootloader, is answering)."""
        return None

    def request_bootloader(self) -> Bootloader:
        """Ask the running application to reboot into its bootloader; return the
        bootloader session that answers afterwards."""
        raise UnsupportedError(f"{self.name} has no way to request the bootloader")

    def erase_chip(self) -> None:
        raise UnsupportedError(f"{self.name} has no chip erase")

    def erase_units(self, region: Region, start: int, end: int) -> list[tuple[int, int]]:
        """The erase units [lo, hi) (pages, sectors) that cover the bytes [start, end).
        Uniform ``region.erase_size`` units unless the protocol knows better."""
        size = region.erase_size
        first = start - (start - region.start) % size
        return [(lo, lo + size) for lo in range(first, end, size)]

    def erase_range(self, region: Region, start: int, end: int) -> None:
        """Erase the units exactly covering [start, end), which ``erase_units`` gave.
        Only with Capability.PAGE_ERASE."""
        raise UnsupportedError(f"{self.name} cannot erase part of {region.name} by itself")

    def go(self, address: int) -> None:
        """Leave the bootloader by jumping to ``address`` (a vector table)."""
        raise UnsupportedError(f"{self.name} cannot jump to an address", "use `reset`")

    def read_options(self) -> dict[str, object]:
        """The chip's option bytes decoded: ``readout_protection`` level, user bits,
        write-protected ranges. Only with Capability.PROTECTION."""
        raise UnsupportedError(f"{self.name} has no option bytes to read")

    def set_protection(
        self, kind: str, enabled: bool, span: tuple[int, int] | None = None
    ) -> dict[str, object]:
        """Turn ``kind`` ("write" or "readout") protection on or off; ``span`` limits
        write protection to [start, end). Removing read-out protection erases the flash.
        Returns what was done. Only with Capability.PROTECTION."""
        raise UnsupportedError(f"{self.name} cannot change {kind} protection")

    def read_fuses(self) -> dict[str, int]:
        """Return the chip's fuse bytes by name (``lfuse``, ``hfuse``, ``efuse``)."""
        raise UnsupportedError(
            f"{self.name} cannot read fuses", "use an ISP programmer (STK500v2, AVR ISP mkII)"
        )

    def write_fuse(self, name: str, value: int) -> None:
        """Write one fuse byte. Callers check the value first (flashsh.fuses)."""
        raise UnsupportedError(
            f"{self.name} cannot write fuses", "use an ISP programmer (STK500v2, AVR ISP mkII)"
        )

    def read_lock(self) -> int:
        raise UnsupportedError(f"{self.name} cannot read lock bits", "use an ISP programmer")

    def write_lock(self, value: int) -> None:
        raise UnsupportedError(f"{self.name} cannot write lock bits", "use an ISP programmer")

    def keep_alive(self) -> None:
        """Send the cheapest harmless command; raise ProtocolError if the target is gone.

        Bootloaders without an idle timeout need nothing.
        """
        return None

    def reconnect(self) -> None:
        """Bring the target back into the bootloader after it left (reset, timeout)."""
        raise UnsupportedError(f"{self.name} cannot re-enter the bootloader by itself")

    @abstractmethod
    def start_application(self) -> None:
        """Leave the bootloader and run the application."""

    def follow_after_start(self) -> Bootloader | None:
        """After ``start_application``, the session to continue on when the board comes
        back as something else (a USB device re-enumerates as its application); None to
        keep this one."""
        return None

    def close(self) -> None:
        self.link.close()
