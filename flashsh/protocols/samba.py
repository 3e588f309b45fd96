"""The SAM-BA monitor: SAM3X and SAM4 ROMs, the Arduino Zero and uf2-samdx1 bootloaders.

The monitor reads and writes words and blocks of memory and calls code (samba.md §2);
everything else is done through the chip's registers. flashsh finds out which chip
answers (CHIPID or DSU DID, §7), drives its flash controller (samba_flash), programs
through its own copy routine (samba_applet) or the Arduino ``Y`` command, and checks
with the on-chip ``Z`` CRC where the monitor has it, so verify reads nothing back.

Where the monitor sits decides what is protected: the SAM3/SAM4 monitor is in ROM, so
all of flash is the application's, and after writing flashsh sets GPNVM1 (boot from
flash) or the chip boots the ROM again. The SAMD monitors sit in the first 8 or 16 KiB
of flash (BOOTPROT in the user row, or the board's bootloader size), which flashsh
never writes or erases. Entering the monitor: samba_entry.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from flashsh.chips.sam import SamChip, sam_by_cidr, sam_by_did, sam_part
from flashsh.errors import FlashshError, ImageError, NoAnswerError, ProtocolError, TargetError
from flashsh.numbers import hexaddr
from flashsh.protocols.base import Bootloader, Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.samba_flash import (
    USER_ROW,
    Controller,
    Eefc,
    NvmD21,
    NvmD51,
    controller_for,
)
from flashsh.protocols.samba_wire import ACK, SambaWire, crc16_xmodem, parse_version
from flashsh.transports.base import ByteLink

if TYPE_CHECKING:
    from flashsh.images import Image

#: Cortex-M CPUID and the part numbers bossac tells apart (samba.md §7).
CPUID = 0xE000ED00
CORTEX_M0P, CORTEX_M4 = 0xC60, 0xC24
DSU_DID = 0x41002018
CHIPID_SAM4 = 0x400E0740
#: Bytes per ``Y`` and per ``Z`` (bossac's 4096; fits between routine and stack).
XYZ_CHUNK = 4096
#: GPNVM1: boot from flash instead of the ROM monitor.
GPNVM_BOOT = 1
#: The SAM4S errata makes a first SGPB not stick now and then: one more try.
GPNVM_TRIES = 2
#: How long a ``G`` on a UART gets to show whether the monitor acknowledges it.
GO_ACK_WAIT = 0.2
#: First XMODEM block of the transfer-mode test: raw bytes come at once over USB.
RAW_WAIT = 0.15


class Samba(Bootloader):
    name = "samba"
    baudrates = (115200,)
    after_start = "`bootloader` brings the monitor back (1200-baud touch)"

    def __init__(self, link: ByteLink, wire: SambaWire, chip: SamChip, version: str) -> None:
        super().__init__(link)
        self.wire = wire
        self.chip = chip
        self.version = version
        self.flash_controller: Controller = controller_for(wire, chip)
        self.how = ""
        self.chip_from = "chip ID"
        self.usb_id = link.usb_id
        self.bootprot = 0
        self.user_word = 0
        self.app_start = chip.flash_base
        self.boot_flash: bool | None = None
        erase = Capability.PAGE_ERASE_ON_WRITE
        if chip.ewp_limit or not chip.is_eefc:
            erase = Capability.PAGE_ERASE | Capability.ERASE_BEFORE_WRITE
        self.capabilities = Capability.READ | Capability.WRITE | Capability.CHIP_ERASE | erase

    # ------------------------------------------------------------------ connecting

    @classmethod
    def probe(cls, link: ByteLink, *, reset: bool, chip: str | None = None) -> Bootloader | None:
        """``N#`` then ``V#``: harmless to other bootloaders (unknown bytes to them). A
        known SAM board whose monitor is silent is an application running: the
        session that can ask it for the monitor (samba_entry)."""
        link.drain(quiet=0.02, limit=0.2)
        try:
            found = connect(link, chip)
        except ProtocolError:
            found = None
        if found is not None:
            return found
        from flashsh.protocols.samba_entry import application_for

        return application_for(link, chip)

    @classmethod
    def no_answer_hint(cls, link: ByteLink) -> str:
        return (
            "SAMD boards: press reset twice quickly (the LED pulses in the bootloader); "
            "SAM3X/SAM4: the ROM monitor runs only while GPNVM1 is clear: press ERASE, "
            "then RESET (this erases the flash); the Due's programming port runs at 115200"
        )

    def setup(self) -> None:
        """After identification: geometry, bootloader size, copy routine."""
        chip = self.chip
        wire = self.wire
        if not chip.is_eefc and wire.usb:
            wire.read_max = min(wire.read_max, 63)  # USB DMA cannot read flash
        if isinstance(self.flash_controller, NvmD21 | NvmD51):
            self.user_word = wire.read_word(USER_ROW)
            self.bootprot = self.flash_controller.bootprot_size(self.user_word)
            self.app_start = chip.flash_base + max(self.bootprot, chip.bootloader)
        self.flash_controller.prepare()
        if self.uses_applet:
            self.flash_controller.load_applet()
            if not wire.usb:
                self._learn_go_ack()

    @property
    def uses_applet(self) -> bool:
        return self.chip.is_eefc or "Y" not in self.wire.extensions

    def _learn_go_ack(self) -> None:
        """Run the copy routine with nothing to copy and see whether the monitor
        sends ACK after ``G`` (Arduino monitors on a UART do, samba.md §5.3)."""
        base = self.chip.applet
        from flashsh.protocols import samba_applet as applet

        self.wire.write_memory(base + applet.PARAMS, applet.frame(base, 0, b""))
        self.wire.send_command(f"G{base + applet.VECTOR:08X}#")
        self.wire.go_ack = self.link.read(1, GO_ACK_WAIT) == bytes([ACK])

    # ------------------------------------------------------------------ facts

    @property
    def transfer_page(self) -> int:
        """The unit ``write_page`` takes: 4 KiB through ``Y``, else one flash page."""
        return XYZ_CHUNK if not self.uses_applet else self.chip.page_size

    def identify(self) -> TargetInfo:
        chip = self.chip
        details: dict[str, object] = {
            "family": chip.family_name,
            "flash_size": f"{chip.flash_size // 1024} KiB at {hexaddr(chip.flash_base)}",
            "page_size": chip.page_size,
            "erase_size": chip.erase_size,
            "monitor": self.version,
            "extensions": "".join(sorted(self.wire.extensions)) or "none",
            "transfer": "USB-CDC, raw" if self.wire.usb else "UART, XMODEM-CRC",
            "write_path": "Arduino Y" if not self.uses_applet else "flashsh copy routine",
            "verify": "on-chip CRC (Z)" if "Z" in self.wire.extensions else "read back",
            "application_start": hexaddr(self.app_start),
            "chip_from": self.chip_from,
        }
        try:
            details |= self._state()
        except FlashshError as exc:
            details["state"] = f"not readable: {exc.message}"
        return TargetInfo(
            protocol=self.name,
            bootloader=self._bootloader_name(),
            chip=chip.name,
            link=self.link.description,
            baudrate=None if self.wire.usb else self.link.baudrate,
            how=self.how,
            details=details,
        )

    def _bootloader_name(self) -> str:
        if self.chip.is_eefc:
            return f"SAM-BA ROM monitor {self.version.split(' ')[0]}"
        kind = "Arduino" if "[Arduino:" in self.version else "SAM-BA"
        if self.version.startswith("v1.1") and self.wire.extensions:
            kind = "uf2-samdx1"
        size = self.app_start - self.chip.flash_base
        return f"{kind} bootloader {self.version.split(' ')[0]} ({size // 1024} KiB)"

    def _state(self) -> dict[str, object]:
        state: dict[str, object] = {}
        controller = self.flash_controller
        if isinstance(controller, Eefc):
            bits = controller.gpnvm()
            for bit, name in enumerate(self.chip.gpnvm):
                state[f"gpnvm{bit}"] = f"{(bits >> bit) & 1} ({name})"
            state["security"] = bool(bits & 1)
        else:
            state["bootprot"] = f"{self.bootprot} bytes (user row word 0x{self.user_word:08x})"
            state["security"] = controller.security()
        return state

    def memory_map(self) -> MemoryMap:
        chip = self.chip
        flash = Region(
            "flash", chip.flash_base, chip.flash_size, self.transfer_page, chip.erase_size
        )
        regions = [flash]
        if not chip.is_eefc:
            size = 256 if chip.controller == "nvm-d21" else 512
            regions.append(Region("user", USER_ROW, size, 64, size, "r", 1))
        regions.append(
            Region("sram", chip.sram_base, chip.sram_size, 1024, 1024, "r", len(regions))
        )
        bootloader = None
        if self.app_start > chip.flash_base:
            bootloader = (chip.flash_base, self.app_start)
        return MemoryMap(tuple(regions), bootloader=bootloader, app_start=self.app_start)

    # ------------------------------------------------------------------ memory

    def read(self, region: Region, address: int, length: int) -> bytes:
        if self.chip.is_eefc and region.name == "flash":
            return self._read_through_sram(address, length)
        return self.wire.read_memory(address, length)

    def _read_through_sram(self, address: int, length: int) -> bytes:
        """SAM3/SAM4: copy flash into SRAM with the routine, then ``R`` it, as bossac
        reads these ROMs (samba.md §11.2): the SAM3 ROM answers ``R`` straight from flash
        with zeros (shumatech/BOSSA src/EefcFlash.cpp ``readPage``)."""
        from flashsh.protocols import samba_applet as applet

        self.flash_controller.settle()
        base = self.chip.applet
        out = bytearray()
        first = address - address % 4
        page = self.chip.page_size
        for here in range(first, address + length, page):
            size = min(page, address + length - here)
            size += -size % 4
            self.flash_controller.load_applet()
            self.wire.write_memory(
                base + applet.PARAMS, struct.pack("<III", base + applet.BUFFER, here, size // 4)
            )
            self.wire.go(base + applet.VECTOR)
            data = self.wire.read_memory(base + applet.BUFFER, size)
            out += data
        skip = address - first
        return bytes(out[skip : skip + length])

    def crc_matches(self, region: Region, address: int, data: bytes) -> bool | None:
        """With ``Z``: compare the chip's CRC-16 of the range with the data's."""
        if "Z" not in self.wire.extensions or region.name != "flash":
            return None
        for offset in range(0, len(data), XYZ_CHUNK):
            chunk = data[offset : offset + XYZ_CHUNK]
            if self.wire.crc(address + offset, len(chunk)) != crc16_xmodem(chunk):
                return False
        return True

    def _refuse_bootloader(self, start: int, end: int) -> None:
        if start < self.app_start and self.app_start > self.chip.flash_base:
            raise TargetError(
                f"{hexaddr(start)}-{hexaddr(end - 1)} is inside the bootloader "
                f"({hexaddr(self.chip.flash_base)}-{hexaddr(self.app_start - 1)})",
                f"the application starts at {hexaddr(self.app_start)}",
            )

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        if region.name != "flash":
            raise TargetError(f"{region.name} is read-only here")
        self._refuse_bootloader(address, address + len(data))
        data = data + b"\xff" * (-len(data) % self.chip.page_size)
        if not self.uses_applet:
            buffer = self.chip.applet
            self.wire.write_memory(buffer, data)
            self.wire.flash_from_buffer(buffer, address, len(data))
            return
        for offset in range(0, len(data), self.chip.page_size):
            page = data[offset : offset + self.chip.page_size]
            self.flash_controller.write_page(address + offset, page)
        self.boot_flash = None

    def erase_range(self, region: Region, start: int, end: int) -> None:
        self._refuse_bootloader(start, end)
        self.flash_controller.erase(start, end)

    def erase_chip(self) -> None:
        """SAM3/SAM4: EA on every plane (the monitor is in ROM). SAMD: from the
        application start to the end (``X`` where the monitor has it), never the
        bootloader."""
        if self.chip.is_eefc:
            self.flash_controller.erase_all(self.chip.flash_base)
        elif "X" in self.wire.extensions:
            self.wire.erase_from(self.app_start)
        else:
            self.flash_controller.erase_all(self.app_start)

    def finish_writes(self) -> None:
        """SAM3/SAM4: the last page written, then boot from flash from now on, if flash
        holds a vector table."""
        self.flash_controller.settle()
        if self.chip.is_eefc:
            self.ensure_boot_from_flash(quiet=True)

    # ------------------------------------------------------------------ GPNVM

    def gpnvm_bits(self) -> int:
        return self._eefc("GPNVM bits").gpnvm()

    def set_gpnvm(self, bit: int, value: bool) -> int:
        """Set or clear one GPNVM bit and read it back (twice if need be: SAM4S
        errata, samba.md §8.2). Returns the bits afterwards."""
        eefc = self._eefc("GPNVM bits")
        if not 0 <= bit < len(self.chip.gpnvm):
            raise TargetError(f"{self.chip.name} has GPNVM bits 0-{len(self.chip.gpnvm) - 1}")
        if bit == 0 and value:
            raise TargetError(
                "refusing to set GPNVM0, the security bit: it locks the chip until an "
                "ERASE-pin erase"
            )
        bits = eefc.gpnvm()
        for _ in range(GPNVM_TRIES):
            eefc.set_gpnvm(bit, value)
            bits = eefc.gpnvm()
            if bool(bits >> bit & 1) == value:
                return bits
        raise TargetError(
            f"GPNVM{bit} reads back {bits >> bit & 1} after {GPNVM_TRIES} tries",
            "reset the board and try again",
        )

    def ensure_boot_from_flash(self, *, quiet: bool = False) -> bool:
        """Set GPNVM1 when flash starts with something other than erased words; the
        ROM otherwise keeps starting itself. Returns whether it is set."""
        if self.boot_flash:
            return True
        if self.wire.read_word(self.chip.flash_base) == 0xFFFFFFFF:
            if quiet:
                return False
            raise TargetError(
                f"not starting the application: flash at {hexaddr(self.chip.flash_base)} is blank",
                "program an image first; the chip stays in the ROM monitor",
            )
        self.boot_flash = bool(self.set_gpnvm(GPNVM_BOOT, True) >> GPNVM_BOOT & 1)
        return self.boot_flash

    def _eefc(self, what: str) -> Eefc:
        controller = self.flash_controller
        if not isinstance(controller, Eefc):
            raise TargetError(
                f"{self.chip.name} has no {what}",
                "SAMD parts keep BOOTPROT and the lock bits in the user row (`info` shows it)",
            )
        return controller

    # ------------------------------------------------------------------ images

    def check_image(self, image: Image) -> None:
        """An image at the application start must begin with a vector table made for
        that place: initial SP inside SRAM, reset handler inside the image."""
        if image.start != self.app_start or image.size < 8:
            return
        first = image.segments[0]
        if first.address != image.start or len(first.data) < 8:
            return
        sp, reset = struct.unpack_from("<II", first.data)
        chip = self.chip
        name = image.source or "the image"
        hint = (
            f"build it for {hexaddr(self.app_start)} (Klipper: the bootloader offset in "
            "menuconfig), or add `force` to write it anyway"
        )
        if not chip.sram_base < sp <= chip.sram_end:
            raise ImageError(
                f"{name} does not start with a vector table: its initial stack pointer "
                f"{hexaddr(sp)} is outside SRAM ({hexaddr(chip.sram_base)}-"
                f"{hexaddr(chip.sram_end)})",
                hint,
            )
        handler = reset & ~1
        if not image.start <= handler < image.end:
            raise ImageError(
                f"{name} is not linked for {hexaddr(self.app_start)}: its reset handler "
                f"{hexaddr(handler)} lies outside the image "
                f"({hexaddr(image.start)}-{hexaddr(image.end - 1)})",
                hint,
            )

    # ------------------------------------------------------------------ leaving

    def start_application(self) -> None:
        """SAM3/SAM4: GPNVM1 set, then RSTC reset. SAMD: AIRCR SYSRESETREQ; the
        bootloader starts the application."""
        if self.chip.is_eefc:
            self.ensure_boot_from_flash()
        self.flash_controller.reset()
        time.sleep(0.01)

    def keep_alive(self) -> None:
        self.wire.read_word(CPUID)

    def reconnect(self) -> None:
        self.link.drain(quiet=0.02, limit=0.2)
        try:
            again = connect(self.link, self.chip.key)
        except FlashshError:
            again = None
        if again is None:
            raise NoAnswerError(
                f"the SAM-BA monitor is not answering on {self.link.description}",
                "use `bootloader` to bring it back, or "
                + (
                    "press reset twice quickly"
                    if not self.chip.is_eefc
                    else "press ERASE, then RESET (erases the flash)"
                ),
            )
        self.__dict__.update(again.__dict__)

    def request_bootloader(self) -> Bootloader:
        from flashsh.protocols.samba_entry import touch_into_monitor

        return touch_into_monitor(self.link, self.usb_id, self.chip.key, erases=False)


# ---------------------------------------------------------------------- connecting


def hello(wire: SambaWire) -> str | None:
    """``N#`` then ``V#``; the version text, or None when no monitor answers."""
    wire.binary_mode()
    line = wire.version()
    start = line.find(b"v")
    if start < 0 or not line.endswith(b"\n\r"):
        return None
    return line[start:].decode("ascii", "replace").strip()


def find_transfer_mode(wire: SambaWire) -> None:
    """Read 4 bytes with ``R``: over USB they come at once; a UART monitor waits for
    the host's XMODEM ``C`` and then sends a block (samba.md §5)."""
    link = wire.link
    wire.send_command("R00000000,00000004#")
    first = link.read(4, RAW_WAIT)
    if first:
        wire.usb = True
        if len(first) < 4:
            wire.receive(4 - len(first), 0.5, "R 0x00000000")
        return
    wire.usb = False
    wire._xmodem_receive(4, 0)


def identify_chip(wire: SambaWire) -> tuple[SamChip | None, str]:
    """The part, by bossac's probing order (samba.md §7): reading an address the chip
    does not have would hang the monitor. Returns (part or None, what was read)."""
    if wire.read_word(0) & 0xFF000000 == 0xEA000000:
        return None, "an ARM7 SAM7/SAM9 (not supported)"
    part = (wire.read_word(CPUID) >> 4) & 0xFFF
    use_did = part == CORTEX_M0P
    if part == CORTEX_M4:
        use_did = wire.read_word(4) & 0xFFF00000 != 0x00800000  # not in a SAM4 ROM
    if use_did:
        did = wire.read_word(DSU_DID)
        return sam_by_did(did), f"DSU DID 0x{did:08x}"
    cidr = wire.read_word(CHIPID_SAM4)
    at = CHIPID_SAM4 if cidr else 0x400E0940
    if not cidr:
        cidr = wire.read_word(at)
    exid = wire.read_word(at + 4)
    return sam_by_cidr(cidr, exid), f"CHIPID CIDR 0x{cidr:08x} EXID 0x{exid:08x}"


def connect(link: ByteLink, chip: str | None = None) -> Samba | None:
    """Talk to a monitor on ``link``: None when none answers; TargetError for a chip
    flashsh has no data for."""
    wire = SambaWire(link, usb=link.usb_id is not None)
    version = hello(wire)
    if version is None:
        return None
    text, extensions = parse_version(version.encode())
    find_transfer_mode(wire)
    wire.set_extensions(extensions & {"X", "Y", "Z"})
    found, seen = identify_chip(wire)
    chip_from = "chip ID"
    if chip:
        named = sam_part(chip)
        chip_from = "--chip" + (
            " (matches the chip ID)" if named == found else f"; chip says {seen}"
        )
        found = named
    if found is None:
        raise TargetError(
            f"SAM-BA {text} answers, but flashsh has no data for the chip ({seen})",
            "name it with --chip if it is a relative of a known part",
        )
    self = Samba(link, wire, found, text)
    self.chip_from = chip_from
    self.setup()
    how = "USB-CDC" if wire.usb else f"{link.baudrate} baud, XMODEM"
    self.how = f"N# and V# answered ({how}); {seen}"
    return self
