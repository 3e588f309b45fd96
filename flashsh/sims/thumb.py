"""A small Thumb interpreter for the code a SAM-BA host runs with ``G``.

The monitor's ``G`` treats its argument as a vector table: SP <- word[addr], PC <-
word[addr + 4] & ~1, and calls it; the code returns with ``bx lr`` (samba.md §9,
arduino/ArduinoCore-samd bootloaders/zero/sam_ba_monitor.c ``call_applet``). Hosts upload
word-copy routines: bossac's 52-byte one (shumatech/BOSSA src/WordCopyArm.asm: literal
``ldr``, ``ldmia``/``stmia``, ``subs``, ``cmp``, ``b``/``bne``, ``mov sp``, ``bx lr``)
and flashsh's own (flashsh/protocols/samba_applet.py: the same plus ``beq``). Every load
and store goes through the simulated bus with its real width, so a 32-bit store into the
flash range lands in the EEFC latch or the NVMCTRL page buffer, and a byte store there
faults as on the chip.

Decoding follows the 16-bit encodings of the ARMv6-M Architecture Reference Manual
§A6.7 (a subset that ARMv7-M shares); 32-bit instructions (``bl``) are not decoded. An
unknown instruction, a fault or too many steps ends the run with :class:`ThumbFault`,
which the monitor turns into silence, as a HardFault on the chip would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

MASK = 0xFFFFFFFF
#: LR while the routine runs: an EXC_RETURN-like value no code address can have, so a
#: ``bx lr`` (or ``pop {pc}``) to it means "back to the monitor".
RETURN_MAGIC = 0xFFFFFFF9
#: A word copy of a 4 KiB buffer takes ~5000 steps; forty times that is a runaway.
DEFAULT_STEP_LIMIT = 200_000


class Memory(Protocol):
    """What the interpreter needs from the bus. Raises on a bus fault."""

    def read(self, address: int, size: int) -> int: ...
    def write(self, address: int, size: int, value: int) -> None: ...


class ThumbFault(Exception):
    """The routine did something the core would fault on, or never returned."""


@dataclass
class Core:
    """Registers r0-r15 (13 = SP, 14 = LR, 15 = PC) and the N, Z, C, V flags."""

    r: list[int] = field(default_factory=lambda: [0] * 16)
    n: bool = False
    z: bool = False
    c: bool = False
    v: bool = False
    steps: int = 0


def run(
    memory: Memory,
    sp: int,
    pc: int,
    *,
    step_limit: int = DEFAULT_STEP_LIMIT,
    trace: Callable[[int, int], None] | None = None,
) -> Core:
    """Run Thumb code from ``pc`` with stack ``sp`` until it returns to the monitor.
    Raises ThumbFault on an unknown instruction, a bus fault or after ``step_limit``
    instructions."""
    core = Core()
    core.r[13] = sp & ~3 & MASK
    core.r[14] = RETURN_MAGIC
    core.r[15] = pc & ~1 & MASK
    while core.r[15] != RETURN_MAGIC & ~1:
        if core.steps >= step_limit:
            raise ThumbFault(f"no return after {step_limit} instructions (PC 0x{core.r[15]:08X})")
        at = core.r[15]
        try:
            op = memory.read(at, 2)
        except Exception as exc:
            raise ThumbFault(f"instruction fetch at 0x{at:08X}: {exc}") from exc
        if trace is not None:
            trace(at, op)
        core.steps += 1
        core.r[15] = at + 2
        try:
            _execute(core, memory, op, at)
        except ThumbFault:
            raise
        except Exception as exc:
            raise ThumbFault(f"bus fault at PC 0x{at:08X} ({op:04X}): {exc}") from exc
    return core


def _flags_nz(core: Core, value: int) -> None:
    core.n = bool(value & 0x80000000)
    core.z = value == 0


def _add(core: Core, a: int, b: int, carry: int = 0) -> int:
    """AddWithCarry (ARMv6-M ARM §A2.2.1), setting all four flags."""
    total = a + b + carry
    result = total & MASK
    _flags_nz(core, result)
    core.c = total > MASK
    signed = _signed(a) + _signed(b) + carry
    core.v = signed != _signed(result)
    return result


def _sub(core: Core, a: int, b: int) -> int:
    return _add(core, a, ~b & MASK, 1)


def _signed(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def _condition(core: Core, cond: int) -> bool:
    """The condition codes of ARMv6-M ARM §A6.3."""
    tests = (
        core.z,
        not core.z,
        core.c,
        not core.c,
        core.n,
        not core.n,
        core.v,
        not core.v,
        core.c and not core.z,
        not core.c or core.z,
        core.n == core.v,
        core.n != core.v,
        not core.z and core.n == core.v,
        core.z or core.n != core.v,
    )
    return tests[cond] if cond < len(tests) else True


def _branch_to(core: Core, target: int) -> None:
    # Interworking: an even target would switch to ARM state, which M-profile cores
    # cannot do (a fault); the return magic has bit 0 set like every Thumb address.
    if not target & 1:
        raise ThumbFault(f"branch to ARM state at 0x{target:08X}")
    core.r[15] = target & ~1


def _execute(core: Core, memory: Memory, op: int, at: int) -> None:  # noqa: C901, PLR0912
    r = core.r
    top5 = op >> 11
    rd, rn = op & 7, (op >> 3) & 7
    if top5 <= 0b00010:  # lsls / lsrs / asrs rd, rm, #imm5
        imm = (op >> 6) & 0x1F
        value = r[rn]
        kind = top5
        if kind == 0:
            if imm:
                core.c = bool((value >> (32 - imm)) & 1)
            result = (value << imm) & MASK
        else:
            shift = imm or 32
            core.c = bool((value >> (shift - 1)) & 1)
            result = value >> shift if kind == 1 else (_signed(value) >> shift) & MASK
        r[rd] = result
        _flags_nz(core, result)
    elif top5 == 0b00011:  # adds/subs register or 3-bit immediate
        operand = (op >> 6) & 7 if op & 0x400 else r[(op >> 6) & 7]
        r[rd] = _sub(core, r[rn], operand) if op & 0x200 else _add(core, r[rn], operand)
    elif top5 >> 2 == 0b001:  # movs / cmp / adds / subs rdn, #imm8
        rdn, imm = (op >> 8) & 7, op & 0xFF
        kind = (op >> 11) & 3
        if kind == 0:
            r[rdn] = imm
            _flags_nz(core, imm)
        elif kind == 1:
            _sub(core, r[rdn], imm)
        elif kind == 2:
            r[rdn] = _add(core, r[rdn], imm)
        else:
            r[rdn] = _sub(core, r[rdn], imm)
    elif op >> 10 == 0b010000:  # data processing, low registers
        _alu(core, (op >> 6) & 0xF, rd, rn)
    elif op >> 10 == 0b010001:  # add / cmp / mov high registers, bx / blx
        _special(core, op)
    elif top5 == 0b01001:  # ldr rt, [pc, #imm8*4]
        base = (at + 4) & ~3
        r[(op >> 8) & 7] = memory.read(base + (op & 0xFF) * 4, 4)
    elif op >> 12 == 0b0101:  # load/store, register offset
        _load_store(memory, r, (op >> 9) & 7, rd, r[rn] + r[(op >> 6) & 7])
    elif op >> 13 == 0b011:  # str/ldr/strb/ldrb rt, [rn, #imm5]
        byte, load = bool(op & 0x1000), bool(op & 0x800)
        imm = (op >> 6) & 0x1F
        address = (r[rn] + (imm if byte else imm * 4)) & MASK
        size = 1 if byte else 4
        if load:
            r[rd] = memory.read(address, size)
        else:
            memory.write(address, size, r[rd] & ((1 << (8 * size)) - 1))
    elif op >> 12 == 0b1000:  # strh/ldrh rt, [rn, #imm5*2]
        address = (r[rn] + ((op >> 6) & 0x1F) * 2) & MASK
        if op & 0x800:
            r[rd] = memory.read(address, 2)
        else:
            memory.write(address, 2, r[rd] & 0xFFFF)
    elif op >> 12 == 0b1001:  # str/ldr rt, [sp, #imm8*4]
        address = (r[13] + (op & 0xFF) * 4) & MASK
        rt = (op >> 8) & 7
        if op & 0x800:
            r[rt] = memory.read(address, 4)
        else:
            memory.write(address, 4, r[rt])
    elif op >> 12 == 0b1010:  # adr / add rd, sp, #imm8*4
        base = r[13] if op & 0x800 else (at + 4) & ~3
        r[(op >> 8) & 7] = (base + (op & 0xFF) * 4) & MASK
    elif op >> 8 == 0b10110000:  # add/sub sp, #imm7*4
        imm = (op & 0x7F) * 4
        r[13] = (r[13] - imm if op & 0x80 else r[13] + imm) & MASK
    elif op >> 9 in (0b1011010, 0b1011110):  # push / pop
        _push_pop(core, memory, op)
    elif op & 0xFF0F == 0xBF00:  # nop and the other hints: nothing to do here
        pass
    elif op >> 12 == 0b1100:  # stmia / ldmia rn!, {list}
        _multiple(core, memory, op)
    elif op >> 12 == 0b1101:
        cond = (op >> 8) & 0xF
        if cond == 0xF:
            raise ThumbFault(f"svc at 0x{at:08X}: no supervisor here")
        if cond == 0xE:
            raise ThumbFault(f"permanently undefined instruction at 0x{at:08X}")
        if _condition(core, cond):
            offset = op & 0xFF
            offset = offset - 0x100 if offset & 0x80 else offset
            r[15] = (at + 4 + offset * 2) & MASK
    elif top5 == 0b11100:  # b
        offset = op & 0x7FF
        offset = offset - 0x800 if offset & 0x400 else offset
        r[15] = (at + 4 + offset * 2) & MASK
    else:
        raise ThumbFault(f"instruction {op:04X} at 0x{at:08X} not decoded")


def _alu(core: Core, kind: int, rdn: int, rm: int) -> None:
    r = core.r
    a, b = r[rdn], r[rm]
    if kind == 0x0:
        result = a & b
    elif kind == 0x1:
        result = a ^ b
    elif kind in (0x2, 0x3, 0x4, 0x7):  # lsls, lsrs, asrs, rors by register
        shift = b & 0xFF
        if kind == 0x2:
            result = (a << shift) & MASK if shift < 32 else 0
        elif kind == 0x3:
            result = a >> shift if shift < 32 else 0
        elif kind == 0x4:
            result = (_signed(a) >> min(shift, 31)) & MASK
        else:
            shift %= 32
            result = ((a >> shift) | (a << (32 - shift))) & MASK
    elif kind == 0x5:
        r[rdn] = _add(core, a, b, int(core.c))
        return
    elif kind == 0x6:
        r[rdn] = _add(core, a, ~b & MASK, int(core.c))
        return
    elif kind == 0x8:  # tst
        _flags_nz(core, a & b)
        return
    elif kind == 0x9:  # rsbs rd, rm, #0
        r[rdn] = _sub(core, 0, b)
        return
    elif kind == 0xA:
        _sub(core, a, b)
        return
    elif kind == 0xB:  # cmn
        _add(core, a, b)
        return
    elif kind == 0xC:
        result = a | b
    elif kind == 0xD:
        result = (a * b) & MASK
    elif kind == 0xE:
        result = a & ~b & MASK
    else:
        result = ~b & MASK
    r[rdn] = result
    _flags_nz(core, result)


def _special(core: Core, op: int) -> None:
    r = core.r
    kind = (op >> 8) & 3
    rm = (op >> 3) & 0xF
    rdn = (op & 7) | ((op >> 4) & 8)
    value = r[rm] + (4 if rm == 15 else 0)  # PC reads as the instruction + 4
    if kind == 0:  # add
        result = (r[rdn] + value) & MASK
        if rdn == 15:
            core.r[15] = result & ~1
        else:
            r[rdn] = result
    elif kind == 1:  # cmp
        _sub(core, r[rdn], value)
    elif kind == 2:  # mov
        if rdn == 15:
            r[15] = value & ~1
        else:
            r[rdn] = value & (~3 & MASK if rdn == 13 else MASK)
    else:  # bx / blx
        if op & 0x80:
            r[14] = (r[15]) | 1
        _branch_to(core, value)


def _load_store(memory: Memory, r: list[int], kind: int, rt: int, address: int) -> None:
    address &= MASK
    # str, strh, strb, ldrsb, ldr, ldrh, ldrb, ldrsh (ARMv6-M ARM §A6.2.4)
    size = (4, 2, 1, 1, 4, 2, 1, 2)[kind]
    if kind < 3:
        memory.write(address, size, r[rt] & ((1 << (8 * size)) - 1))
        return
    value = memory.read(address, size)
    if kind == 3 and value & 0x80:
        value |= 0xFFFFFF00
    if kind == 7 and value & 0x8000:
        value |= 0xFFFF0000
    r[rt] = value


def _push_pop(core: Core, memory: Memory, op: int) -> None:
    r = core.r
    regs = [i for i in range(8) if op & (1 << i)]
    if op & 0x800:  # pop
        extra = [15] if op & 0x100 else []
        for reg in regs + extra:
            value = memory.read(r[13], 4)
            r[13] = (r[13] + 4) & MASK
            if reg == 15:
                _branch_to(core, value)
            else:
                r[reg] = value
    else:
        extra = [14] if op & 0x100 else []
        r[13] = (r[13] - 4 * len(regs + extra)) & MASK
        for i, reg in enumerate(regs + extra):
            memory.write(r[13] + 4 * i, 4, r[reg])


def _multiple(core: Core, memory: Memory, op: int) -> None:
    r = core.r
    rn = (op >> 8) & 7
    regs = [i for i in range(8) if op & (1 << i)]
    if not regs:
        raise ThumbFault("ldm/stm with an empty register list is UNPREDICTABLE")
    address = r[rn]
    load = bool(op & 0x800)
    for reg in regs:
        if load:
            r[reg] = memory.read(address, 4)
        else:
            memory.write(address, 4, r[reg])
        address = (address + 4) & MASK
    # ldmia writes back unless rn is in the list (then rn holds the loaded value).
    if not (load and rn in regs):
        r[rn] = address
