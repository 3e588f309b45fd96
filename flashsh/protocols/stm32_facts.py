"""What flashsh finds out about an STM32 through its ROM: which chip, how much flash,
whether read-out protection is on; and what to suspect when the ROM stays silent.

The product ID names a group of parts; the flash-size register (fact sheet §11) tells
the real size, and with it, often, the part. Under read-out protection that register
cannot be read: Read Memory is refused right after its command bytes, which is also the
only dependable test for protection (fact sheet §7).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from flashsh.chips.stm32 import Stm32Chip, stm32_by_pid, stm32_part, stm32_parts
from flashsh.errors import TargetError
from flashsh.numbers import hexaddr, human_size
from flashsh.protocols import stm32_options as options
from flashsh.protocols.stm32_wire import READ_MEMORY, Nack, RomLink
from flashsh.transports.base import ByteLink

#: Where the 16-bit flash-size register is unreadable on its own (STM32F4 seen on a
#: NUCLEO-F401RE), the aligned 256-byte block around it still reads (fact sheet §11).
SIZE_BLOCK = 256


@dataclass(frozen=True)
class Finding:
    chip: Stm32Chip
    #: Name to show: the part with an "x" for the package letter the ROM cannot see.
    label: str
    #: Where the flash size came from, for ``info``.
    size_from: str
    rdp_active: bool


def find_chip(rom: RomLink, pid: int, commands: tuple[int, ...], override: str | None) -> Finding:
    """The chip from Get ID and the flash-size register, or ``override`` (--chip, which
    must have the same product ID). Raises TargetError for an unknown product ID."""
    device = stm32_by_pid(pid)
    size, size_from, rdp = _flash_size(rom, device, commands)
    if override:
        part = stm32_part(override)
        if part.pid != pid:
            raise TargetError(
                f"--chip {override} has product ID 0x{part.pid:03X}, but the ROM reports "
                f"0x{pid:03X} ({device.name})",
                "leave out --chip, or name the part on the board",
            )
        return Finding(part, part.name, "--chip", rdp)
    if size is None:
        return Finding(device, device.name, size_from, rdp)
    matches = [p for p in stm32_parts().values() if p.pid == pid and p.flash_size == size]
    if len(matches) == 1:
        part = matches[0]
        # The ROM cannot tell packages apart: STM32F103C8 and R8 answer alike.
        return Finding(part, f"{part.name[:-2]}x{part.name[-1]}", size_from, rdp)
    units = tuple(u for u in device.erase_units if u.end <= device.flash_base + size)
    sized = replace(device, flash_size=size, erase_units=units)
    return Finding(sized, device.name, size_from, rdp)


def _flash_size(
    rom: RomLink, device: Stm32Chip, commands: tuple[int, ...]
) -> tuple[int | None, str, bool]:
    """(bytes or None, where the size comes from, read-out protection seen)."""
    address = device.flash_size_register
    if READ_MEMORY not in commands:
        return None, "chip data (the ROM offers no Read Memory)", False
    raw = None
    for start, length in ((address, 2), (address - address % SIZE_BLOCK, SIZE_BLOCK)):
        try:
            block = rom.read_memory(start, length)
        except Nack as nack:
            if nack.stage == "command":
                return None, "chip data (read-out protection hides the register)", True
            continue
        raw = block[address - start : address - start + 2]
        break
    if raw is None:
        where = hexaddr(address)
        return None, f"chip data (the flash-size register at {where} cannot be read)", False
    kib = int.from_bytes(raw, "little")
    if not 0 < kib * 1024 <= device.flash_size:
        return None, f"chip data (the flash-size register holds 0x{kib:04x})", False
    return kib * 1024, f"flash-size register at {hexaddr(address)}", False


def chip_details(
    finding: Finding, pid: int, rdp_level: int | None, options_raw: bytes | None
) -> dict[str, object]:
    """The chip's rows of ``info``."""
    chip = finding.chip
    if chip.erase == "page":
        units = f"{human_size(chip.erase_units[0].size)} pages ({len(chip.erase_units)})"
    else:
        units = "sectors of " + ", ".join(str(u.size // 1024) for u in chip.erase_units)
        units += " KiB"
    protected = "unknown"
    if options_raw is not None:
        protected = options.spans_text(chip, options.protected_sectors(chip, options_raw))
    first, last = chip.bootloader_ram
    return {
        "product_id": f"0x{pid:03X} ({stm32_by_pid(pid).name})",
        "flash_size": f"{human_size(chip.flash_size)} (from the {finding.size_from})",
        "erase_unit": units,
        "readout_protection": options.level_text(rdp_level),
        "write_protected": protected,
        "rom_ram": f"{hexaddr(first)}-{hexaddr(last)} (used by the ROM, never written)",
    }


def no_answer_causes(link: ByteLink, wanted_format: str) -> str:
    """One line of likely causes when nothing answers 0x7F."""
    causes = [
        "BOOT0 was not high when the chip was reset (set BOOT0=1, press reset, connect again)",
        "TX and RX not crossed",
        "wrong port",
    ]
    in_effect = link.format_in_effect()
    if _pi_mini_uart(link.description):
        causes.insert(
            0,
            "this is the Raspberry Pi mini UART, which has no parity (use the PL011: "
            "dtoverlay=disable-bt, /dev/ttyAMA0)",
        )
    elif in_effect is not None and in_effect != wanted_format:
        causes.insert(
            0, f"this port dropped the even parity the ROM needs (it reads back {in_effect})"
        )
    else:
        causes.insert(1, "an adapter without even parity (the Raspberry Pi mini UART)")
    return "likely: " + "; ".join(causes) + "; see docs/stm32.md"


def _pi_mini_uart(port: str) -> bool:
    """True for the Raspberry Pi's mini UART (ttyS0, often as /dev/serial0), which has
    no parity (fact sheet §13)."""
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False
    return "Raspberry Pi" in model and os.path.realpath(port).endswith("/ttyS0")
