"""The four SAM chips a ``sim://samba`` board can carry, each with the monitor it runs.

=================  =====================================================================
``at91sam3x8e``    Arduino Due: SAM-BA in ROM at 0x00100000, shown at 0 while GPNVM1 is
                   clear; 512 KiB flash at 0x00080000 in two EEFC planes, 256-byte pages
``atsam4e8e``      Duet 2: ROM at 0x00800000; 512 KiB at 0x00400000, one EEFC, 512-byte
                   pages, EPA, EWP only in the first 16 KiB
``atsamd21g18a``   Arduino Zero, Adafruit M0: the Arduino Zero bootloader in the first
                   8 KiB of 256 KiB, NVMCTRL (SAMD21)
``atsamd51j19a``   Adafruit Metro M4: uf2-samdx1 in the first 16 KiB of 512 KiB,
                   NVMCTRL (SAMD51)
=================  =====================================================================

Identification values are the ones bossac reads (samba.md §7, samba-testing.md §2):
CPUID at 0xE000ED00, CHIPID CIDR/EXID (SAM3X at 0x400E0940 with 0 at 0x400E0740; SAM4E
at 0x400E0740), DSU DID at 0x41002018. Memory maps: samba.md §8.1. The monitor's own
code is a recognisable stand-in (a vector table, then a label repeated), so a test can
tell it survived.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from flashsh.sims.samba_bus import Bus, Context, Device, Ram, Registers, Window
from flashsh.sims.samba_eefc import EefcPlane, EefcTiming, Gpnvm
from flashsh.sims.samba_nvm import USER_ROW, Nvm, NvmD21, NvmD51

SCB = 0xE000E000
CPUID, AIRCR = 0xE000ED00, 0xE000ED0C
AIRCR_RESET = 0x05FA0004  # VECTKEY 0x05FA, SYSRESETREQ (ARMv6-M/ARMv7-M ARM, AIRCR)
RSTC_KEY_RESET = 0xA500000D  # KEY 0xA5, PROCRST | PERRST | EXTRST (samba.md §8.2)
DSU_DID = 0x41002018
KIB = 1024


@dataclass(frozen=True)
class ChipSpec:
    name: str
    family: str  # "sam3x", "sam4e", "samd21", "samd51"
    monitor: str  # "rom", "zero", "uf2"
    cpuid: int
    flash_base: int
    flash_size: int
    page: int
    sram: tuple[tuple[int, int], ...]
    ids: dict[int, int]  # identification registers bossac reads
    #: SAMD: bytes of flash the bootloader occupies; SAM3/4: the ROM's address.
    monitor_size: int = 0
    rom_base: int = 0
    rstc_cr: int = 0
    eefc: tuple[int, ...] = ()
    lock_region: int = 0
    gpnvm_bits: int = 0
    ewp_limit: int | None = None
    has_epa: bool = False
    #: Initial words of the SAMD user row/page (uf2-samdx1 src/main.c and selfmain.c).
    user_words: tuple[int, ...] = ()
    usb_id: str = ""
    #: The monitor's initial SP and reset handler (stand-ins: UNCONFIRMED values).
    vector: tuple[int, int] = (0, 0)


CHIPS: dict[str, ChipSpec] = {
    "at91sam3x8e": ChipSpec(
        name="AT91SAM3X8E",
        family="sam3x",
        monitor="rom",
        cpuid=0x412FC230,
        flash_base=0x00080000,
        flash_size=512 * KIB,
        page=256,
        # SRAM0 64 KiB (also seen at 0x20070000, right below SRAM1) and SRAM1 32 KiB
        # (GerHobbelt/ArduinoCore-sam sam3x8e.h IRAM0/IRAM1).
        sram=((0x20000000, 64 * KIB), (0x20080000, 32 * KIB)),
        ids={0x400E0740: 0, 0x400E0940: 0x285E0A60, 0x400E0944: 0},
        rom_base=0x00100000,
        rstc_cr=0x400E1A00,
        eefc=(0x400E0A00, 0x400E0C00),
        lock_region=16 * KIB,
        gpnvm_bits=3,
        usb_id="03eb:6124",
        vector=(0x20001000, 0x00100B01),
    ),
    "atsam4e8e": ChipSpec(
        name="ATSAM4E8E",
        family="sam4e",
        monitor="rom",
        cpuid=0x410FC241,
        flash_base=0x00400000,
        flash_size=512 * KIB,
        page=512,
        sram=((0x20000000, 128 * KIB),),
        ids={0x400E0740: 0xA3CC0CE0, 0x400E0744: 0x00120208},
        rom_base=0x00800000,
        rstc_cr=0x400E1800,
        eefc=(0x400E0A00,),
        lock_region=8 * KIB,
        gpnvm_bits=2,
        ewp_limit=16 * KIB,
        has_epa=True,
        usb_id="03eb:6124",
        # The reset vector must lie in 0x008xxxxx: bossac tells a SAM4 ROM from a
        # SAMD51 bootloader by it (samba.md §7).
        vector=(0x20001000, 0x00800A81),
    ),
    "atsamd21g18a": ChipSpec(
        name="ATSAMD21G18A",
        family="samd21",
        monitor="zero",
        cpuid=0x410CC601,
        flash_base=0,
        flash_size=256 * KIB,
        page=64,
        sram=((0x20000000, 32 * KIB),),
        ids={DSU_DID: 0x10010305},
        monitor_size=8 * KIB,
        # BOOTPROT 2 = 8 KiB (uf2-samdx1 src/main.c "Reasonable fuse values").
        user_words=(0xD8E0C7FA, 0xFFFFFC5D),
        usb_id="2341:004d",  # arduino/ArduinoCore-samd board_definitions_arduino_zero.h
        vector=(0x20007FFC, 0x000004D1),
    ),
    "atsamd51j19a": ChipSpec(
        name="ATSAMD51J19A",
        family="samd51",
        monitor="uf2",
        cpuid=0x410FC241,
        flash_base=0,
        flash_size=512 * KIB,
        page=512,
        sram=((0x20000000, 192 * KIB),),
        ids={DSU_DID: 0x60060005},
        monitor_size=16 * KIB,
        # uf2-samdx1 src/selfmain.c canonical SAMD51 words with BOOTPROT 13 (16 KiB).
        user_words=(0xF69A9239, 0xAEECFF80, 0xFFFFFFFF, 0xFFFFFFFF, 0x00804010),
        usb_id="239a:0021",  # adafruit/uf2-samdx1 boards/metro_m4/board_config.h
        vector=(0x20030000, 0x00000B85),
    ),
}


def stand_in(label: bytes, size: int, vector: tuple[int, int]) -> bytes:
    """A monitor's code as the simulator shows it: its vector table, then ``label``."""
    body = (label * (size // len(label) + 1))[: size - 8]
    return struct.pack("<II", *vector) + body


@dataclass
class Chip:
    """A built chip: its bus and the parts tests and the monitor look at."""

    spec: ChipSpec
    ctx: Context
    bus: Bus
    flash: bytearray
    user: bytearray
    sram: list[Ram]
    planes: list[EefcPlane] = field(default_factory=list)
    gpnvm: Gpnvm | None = None
    nvm: Nvm | None = None
    rom: bytes = b""
    #: Called with the reason when software asks for a reset (AIRCR, RSTC).
    on_reset: Callable[[str], None] = lambda why: None

    @property
    def app_start(self) -> int:
        return self.spec.flash_base + self.spec.monitor_size

    def boot_target(self) -> tuple[Device, int]:
        """What address 0 shows on SAM3/SAM4: the ROM while GPNVM1 is clear, else
        flash (SAM3X: flash1 when GPNVM2 is set)."""
        assert self.gpnvm is not None
        if not self.gpnvm.value & 2:
            return self.rom_device, self.spec.rom_base
        plane = self.planes[1 if self.gpnvm.value & 4 and len(self.planes) > 1 else 0]
        return plane, plane.base

    rom_device: Device = field(default=None)  # type: ignore[assignment]


def build(name: str, ctx: Context, *, gpnvm: int = 0, erase_timing: float | None = None) -> Chip:
    """The chip ``name`` with its monitor's code in place. Raises ValueError."""
    try:
        spec = CHIPS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown chip {name!r}; valid: {', '.join(CHIPS)}") from None
    bus = Bus()
    flash = bytearray([0xFF]) * spec.flash_size
    user = bytearray([0xFF]) * (256 if spec.family == "samd21" else 512)
    for i, word in enumerate(spec.user_words):
        user[4 * i : 4 * i + 4] = struct.pack("<I", word)
    srams = [Ram(base, size) for base, size in spec.sram]
    chip = Chip(spec, ctx, bus, flash, user, srams)
    # Peripheral space reads as zero registers unless a model sits there, so bossac's
    # probes (0x400E0740 on SAM3X) answer as on the chip.
    if spec.family in ("sam3x", "sam4e"):
        bus.map(0x400E0000, 0x2600, Registers(0x400E0000, 0x2600), "system controller")
    else:
        bus.map(0x40000000, 0x3000000, Registers(0x40000000, 0x3000000), "peripherals")
    for address, value in spec.ids.items():
        bus.map(address, 4, Ram(address, struct.pack("<I", value), writable=False), "chip ID")
    for ram in srams:
        bus.map(ram.base, len(ram.data), ram, "SRAM")
    if spec.family == "sam3x":
        # SRAM0's mirror right below SRAM1 makes the two one contiguous block.
        bus.map(0x20070000, 64 * KIB, _Mirror(srams[0], 0x20070000), "SRAM0 mirror")
    bus.map(SCB, 0x1000, _Scb(chip), "SCB")
    if spec.family in ("sam3x", "sam4e"):
        _build_eefc(chip, gpnvm, erase_timing)
    else:
        _build_nvm(chip, erase_timing)
    return chip


class _Mirror:
    def __init__(self, ram: Ram, base: int) -> None:
        self.ram = ram
        self.base = base

    def read(self, address: int, size: int) -> int:
        return self.ram.read(self.ram.base + address - self.base, size)

    def write(self, address: int, size: int, value: int) -> None:
        self.ram.write(self.ram.base + address - self.base, size, value)


class _Scb:
    """CPUID and AIRCR of the System Control Block; the rest reads as zero."""

    def __init__(self, chip: Chip) -> None:
        self.chip = chip

    def read(self, address: int, size: int) -> int:
        if address & ~3 == CPUID:
            return self.chip.spec.cpuid >> (8 * (address % 4)) & ((1 << (8 * size)) - 1)
        return 0

    def write(self, address: int, size: int, value: int) -> None:
        if address == AIRCR and size == 4 and value & 0xFFFF0004 == AIRCR_RESET:
            self.chip.ctx.log("AIRCR SYSRESETREQ")
            self.chip.on_reset("AIRCR SYSRESETREQ")


class _Rstc:
    """RSTC_CR: key 0xA5 and PROCRST resets the chip."""

    def __init__(self, chip: Chip) -> None:
        self.chip = chip

    def read(self, address: int, size: int) -> int:
        return 0

    def write(self, address: int, size: int, value: int) -> None:
        if address == self.chip.spec.rstc_cr and value >> 24 == 0xA5 and value & 1:
            self.chip.ctx.log(f"RSTC_CR 0x{value:08X}")
            self.chip.on_reset("RSTC_CR")


def _build_eefc(chip: Chip, gpnvm: int, erase_timing: float | None) -> None:
    spec = chip.spec
    bus = chip.bus
    chip.gpnvm = Gpnvm(spec.gpnvm_bits, gpnvm)
    timing = EefcTiming() if erase_timing is None else EefcTiming(plane_erase=erase_timing)
    plane_size = spec.flash_size // len(spec.eefc)
    for index, regs in enumerate(spec.eefc):
        plane = EefcPlane(
            chip.ctx,
            index=index,
            regs=regs,
            flash=chip.flash,
            offset=index * plane_size,
            size=plane_size,
            base=spec.flash_base + index * plane_size,
            page=spec.page,
            lock_region=spec.lock_region,
            gpnvm=chip.gpnvm if index == 0 else None,
            has_epa=spec.has_epa,
            ewp_limit=spec.ewp_limit,
            timing=timing,
        )
        chip.planes.append(plane)
        bus.map(plane.base, plane_size, plane, f"flash plane {index}")
        bus.map(regs, 0x10, plane.registers, f"EEFC{index}")
    label = b"SAM-BA ROM " + spec.name.encode() + b" "
    chip.rom = stand_in(label, 32 * KIB, spec.vector)
    chip.rom_device = Ram(spec.rom_base, chip.rom, writable=False)
    bus.map(spec.rom_base, len(chip.rom), chip.rom_device, "ROM")
    bus.map(spec.rstc_cr, 0x10, _Rstc(chip), "RSTC")
    # The boot memory at 0: as large as the ROM's or flash's window there (§8.1).
    window = Window(lambda: _boot_view(chip))
    bus.map(0, spec.flash_base if spec.family == "sam3x" else 0x00400000, window, "boot memory")


def _boot_view(chip: Chip) -> tuple[Device, int]:
    device, base = chip.boot_target()
    if device is chip.rom_device:
        return _Wrap(chip.rom_device, base, len(chip.rom)), 0
    return device, base


class _Wrap:
    """The ROM repeats through the boot window (its address lines are not decoded
    beyond its size; UNCONFIRMED, but nothing reads beyond the first words)."""

    def __init__(self, rom: Device, base: int, size: int) -> None:
        self.rom = rom
        self.base = base
        self.size = size

    def read(self, address: int, size: int) -> int:
        return self.rom.read(self.base + address % self.size, size)

    def write(self, address: int, size: int, value: int) -> None:
        pass


def _build_nvm(chip: Chip, erase_timing: float | None) -> None:
    spec = chip.spec
    cls = NvmD21 if spec.family == "samd21" else NvmD51
    nvm = cls(chip.ctx, chip.flash, chip.user)
    if erase_timing is not None:
        from dataclasses import replace

        nvm.timing = replace(nvm.timing, erase=erase_timing)
    chip.nvm = nvm
    chip.bus.map(0, spec.flash_size, nvm, "flash")
    chip.bus.map(USER_ROW, len(chip.user), nvm, "user row")
    # Calibration and serial-number rows next to the user row read as erased here.
    calibration = Ram(USER_ROW + len(chip.user), bytes([0xFF]) * 0x2000, writable=False)
    chip.bus.map(calibration.base, 0x2000, calibration, "NVM calibration")
    chip.bus.map(0x41004000, 0x34, nvm.registers, "NVMCTRL")
    label = b"Arduino Zero bootloader " if spec.monitor == "zero" else b"uf2-samdx1 "
    chip.flash[: spec.monitor_size] = stand_in(label, spec.monitor_size, spec.vector)
    nvm.reset()
