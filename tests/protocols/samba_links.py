"""Byte links for SAM-BA wire tests: one answers each write from a script, the other
records the ``G`` calls and runs flashsh's copy routine through a small Thumb decoder."""

from __future__ import annotations

import struct
from collections.abc import Callable

from inboxlink import InboxLink


class ScriptedLink(InboxLink):
    """Each write is logged; ``answer(data)`` gives the bytes that arrive after it.
    Reads never wait: an empty inbox is a timeout."""

    description = "scripted"

    def __init__(self, answer: Callable[[bytes], bytes] | None = None, *replies: bytes) -> None:
        self.answer = answer
        self.replies = list(replies)
        self.sent: list[bytes] = []
        super().__init__()

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        if self.answer is not None:
            self.inbox += self.answer(bytes(data))
        elif self.replies:
            self.inbox += self.replies.pop(0)


def run_thumb(memory: dict[int, int], vector: int, *, limit: int = 100_000) -> None:
    """Run Thumb code the way the monitor's G does (SP <- word[vector], PC <-
    word[vector + 4]) until ``bx lr``; ``memory`` maps word addresses to words.
    Decodes only the instructions flashsh's routine uses, straight from the ARMv6-M
    encodings, so a wrong byte in the routine fails here."""
    regs = [0] * 16
    regs[13] = memory[vector]
    pc = memory[vector + 4] & ~1
    flags_z = False

    def half(address: int) -> int:
        word = memory.get(address & ~3, 0)
        return (word >> (16 * ((address >> 1) & 1))) & 0xFFFF

    for _ in range(limit):
        op = half(pc)
        nxt = pc + 2
        if op >> 11 == 0b01001:  # ldr rt, [pc, #imm8*4]
            regs[(op >> 8) & 7] = memory[((pc + 4) & ~3) + (op & 0xFF) * 4]
        elif op >> 11 == 0b00101:  # cmp rn, #imm8
            flags_z = regs[(op >> 8) & 7] == op & 0xFF
        elif op >> 11 == 0b00111:  # subs rdn, #imm8
            rd = (op >> 8) & 7
            regs[rd] = (regs[rd] - (op & 0xFF)) & 0xFFFFFFFF
            flags_z = regs[rd] == 0
        elif op >> 11 in (0b11001, 0b11000):  # ldmia / stmia rn!, {list}
            rn = (op >> 8) & 7
            for r in range(8):
                if op & (1 << r):
                    if op >> 11 == 0b11001:
                        regs[r] = memory.get(regs[rn], 0xFFFFFFFF)
                    else:
                        memory[regs[rn]] = regs[r]
                    regs[rn] += 4
        elif op >> 12 == 0b1101 and (op >> 8) & 0xF in (0, 1):  # beq / bne
            offset = (op & 0xFF) - 0x100 if op & 0x80 else op & 0xFF
            if flags_z == ((op >> 8) & 0xF == 0):
                nxt = pc + 4 + offset * 2
        elif op == 0x4770:  # bx lr
            return
        else:
            raise AssertionError(f"instruction {op:04x} at {pc:#x} is not decoded")
        pc = nxt
    raise AssertionError("the routine did not return")


def load(memory: dict[int, int], address: int, data: bytes) -> None:
    for offset in range(0, len(data), 4):
        memory[address + offset] = struct.unpack_from("<I", data.ljust(offset + 4, b"\0"), offset)[
            0
        ]
