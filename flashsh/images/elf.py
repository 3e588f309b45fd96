"""ELF executables: the bytes a loader would copy, at the addresses they are stored at.

Each PT_LOAD program header with file data becomes a segment at its *physical* address
(p_paddr, the load address). Initialised RAM (.data) runs at its virtual address in RAM
but is stored in flash at its physical address, and the startup code copies it over; so
p_paddr is where the bytes must be programmed. Segments with no file data (.bss) hold
nothing to program.
"""

from __future__ import annotations

import io
import struct

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from flashsh.errors import ImageError
from flashsh.images.image import Image
from flashsh.images.sniff import hint_for_wrong_format
from flashsh.numbers import hexaddr

# avr-gcc folds the AVR's separate memories into one ELF address space; these offsets are
# the memory origins in binutils' AVR linker scripts (ld/scripttempl/avr.sc). Flash sits
# at 0; everything from 0x800000 up is another memory.
AVR_DATA = 0x800000
AVR_EEPROM = 0x810000
AVR_OTHER = {
    0x800000: "data memory (SRAM)",
    0x820000: "fuses",
    0x830000: "lock bits",
    0x840000: "signature",
    0x850000: "user signature",
}
_AVR_SPACE = 0x10000  # each of those memories spans at most 64 KiB of the space
_DAMAGED = "rebuild it, or check that it was copied completely"


def read_elf(
    source: str, data: bytes, *, address: int | None = None, default_address: int = 0
) -> Image:
    """Read the loadable segments of an ELF executable; the addresses come from the file.

    For AVR, EEPROM data becomes ``image.extra["eeprom"]`` and fuse, lock or SRAM data is
    left out with a note. Raises ImageError for a file that is not ELF, is damaged, or has
    nothing to load.
    """
    if not data.startswith(b"\x7fELF"):
        raise ImageError(
            f"{source} is not an ELF file (it does not start with 0x7f 'ELF')",
            hint_for_wrong_format(data, "elf") or _DAMAGED,
        )
    try:
        elf = ELFFile(io.BytesIO(data))
        machine, kind, entry = elf["e_machine"], elf["e_type"], elf["e_entry"]
        loads = [
            (segment["p_paddr"], segment["p_filesz"], segment.data())
            for segment in elf.iter_segments()
            if segment["p_type"] == "PT_LOAD" and segment["p_filesz"] > 0
        ]
    # pyelftools reports damage through its own, its parser's and stdlib errors alike.
    except (ELFError, ConstructError, struct.error, ValueError, EOFError) as err:
        raise ImageError(f"{source}: damaged ELF file ({err})", _DAMAGED) from None

    for paddr, size, payload in loads:
        if len(payload) < size:
            raise ImageError(
                f"{source}: the segment for {hexaddr(paddr)} runs past the end of the file",
                _DAMAGED,
            )
    if not loads:
        if kind == "ET_REL":
            raise ImageError(
                f"{source} is an object file, not a linked program",
                "flash the linked output (the .elf the build produces last)",
            )
        raise ImageError(
            f"{source} has no loadable segments with data",
            "check that it is the firmware the build produced, not a symbols or debug file",
        )

    segments = [(paddr, payload) for paddr, _, payload in loads]
    notes: list[str] = []
    extra: dict[str, Image] = {}
    if machine == "EM_AVR":
        segments, eeprom, notes = _split_avr(source, segments)
        if eeprom:
            extra["eeprom"] = Image(eeprom, source=source, format="elf", region="eeprom")
    return Image(segments, source=source, format="elf", entry=entry, notes=notes, extra=extra)


def _split_avr(
    source: str, segments: list[tuple[int, bytes]]
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]], list[str]]:
    """Sort AVR segments into (flash, eeprom, notes about the rest)."""
    flash: list[tuple[int, bytes]] = []
    eeprom: list[tuple[int, bytes]] = []
    notes: list[str] = []
    for paddr, payload in segments:
        if paddr < AVR_DATA:
            flash.append((paddr, payload))
        elif AVR_EEPROM <= paddr < AVR_EEPROM + _AVR_SPACE:
            eeprom.append((paddr - AVR_EEPROM, payload))
        else:
            base = paddr - paddr % _AVR_SPACE
            what = AVR_OTHER.get(base, "memory that is not flash")
            notes.append(
                f"{source}: left out {len(payload)} bytes of {what} at {hexaddr(paddr)}"
                + ("; set fuses with the fuse commands" if base == 0x820000 else "")
            )
    return flash, eeprom, notes
