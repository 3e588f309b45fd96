"""flashsh's word-copy routine, run by the monitor's ``G`` command.

The SAM3/SAM4 ROMs cannot program flash by themselves: a program in SRAM must store
the page into the flash controller's latch (or page buffer) with 32-bit writes, and the
host then issues the controller's write command. This routine copies ``words`` words
from ``src`` to ``dst`` and returns. It is 20 bytes of Thumb code (ARMv6-M and ARMv7-M
alike) followed by five words:

    offset  content
    0x00    code (entry)
    0x14    initial SP        } the vector G reads: SP <- word[0x14],
    0x18    entry | 1         } PC <- word[0x18] (Thumb bit set)
    0x1C    dst
    0x20    src
    0x24    words
    0x28    page data (``BUFFER``): src points here

so one ``S`` of the three parameters and the page (``frame``) prepares a whole page
and ``G base+0x14`` runs it. The monitor restores its own SP when ``bx lr`` returns
(samba.md §9, arduino/ArduinoCore-samd bootloaders/zero/sam_ba_monitor.c call_applet).

Instruction by instruction (ARMv6-M Architecture Reference Manual, §A6.7 encodings;
``PC`` in a literal load reads as the instruction's address + 4, rounded down to 4):

    0x00  4806  ldr   r0, [pc, #24]   r0 = dst    (0x04 + 24 = 0x1C)
    0x02  4907  ldr   r1, [pc, #28]   r1 = src    (0x04 + 28 = 0x20)
    0x04  4A07  ldr   r2, [pc, #28]   r2 = words  (0x08 + 28 = 0x24)
    0x06  2A00  cmp   r2, #0
    0x08  D003  beq   0x12            nothing to copy
    0x0A  C908  ldmia r1!, {r3}       r3 = *src++
    0x0C  C008  stmia r0!, {r3}       *dst++ = r3 (one 32-bit store: the latch needs it)
    0x0E  3A01  subs  r2, #1
    0x10  D1FB  bne   0x0A
    0x12  4770  bx    lr              back to the monitor
"""

from __future__ import annotations

import struct

CODE = bytes.fromhex("0648 0749 074A 002A 03D0 08C9 08C0 013A FBD1 7047")
#: Offsets inside the routine's area.
VECTOR = 0x14
PARAMS = 0x1C
BUFFER = 0x28


def image(base: int, stack: int) -> bytes:
    """The routine with its vector, for an ``S`` to ``base``; parameters zero."""
    return CODE + struct.pack("<II", stack, base | 1) + bytes(12)


def frame(base: int, dst: int, data: bytes) -> bytes:
    """Parameters and data for one copy of ``data`` (a multiple of 4 bytes) to
    ``dst``, for an ``S`` to ``base + PARAMS``."""
    return struct.pack("<III", dst, base + BUFFER, len(data) // 4) + data


def decode(code: bytes = CODE) -> list[str]:
    """The routine as assembly text, decoded from its bytes (tests check these)."""
    out = []
    for offset in range(0, len(code), 2):
        (op,) = struct.unpack_from("<H", code, offset)
        out.append(f"{offset:02X}  {op:04X}  {_mnemonic(op, offset)}")
    return out


def _mnemonic(op: int, at: int) -> str:
    top5 = op >> 11
    if top5 == 0b01001:
        imm = (op & 0xFF) * 4
        return f"ldr r{(op >> 8) & 7}, [pc, #{imm}] -> 0x{((at + 4) & ~3) + imm:02X}"
    if top5 == 0b00101:
        return f"cmp r{(op >> 8) & 7}, #{op & 0xFF}"
    if top5 == 0b00111:
        return f"subs r{(op >> 8) & 7}, #{op & 0xFF}"
    if top5 in (0b11001, 0b11000):
        regs = ",".join(f"r{i}" for i in range(8) if op & (1 << i))
        return f"{'ldmia' if top5 == 0b11001 else 'stmia'} r{(op >> 8) & 7}!, {{{regs}}}"
    if op >> 12 == 0b1101:
        offset = (op & 0xFF) - 0x100 if op & 0x80 else op & 0xFF
        cond = {0: "beq", 1: "bne"}.get((op >> 8) & 0xF, "b?")
        return f"{cond} 0x{at + 4 + offset * 2:02X}"
    if op == 0x4770:
        return "bx lr"
    return "?"
