"""The STM32 system-memory bootloader's USART loop (ST AN3155) as a firmware model.

Written like the ROM's main loop: after reset it waits for 0x7F to measure the baud rate,
answers ACK, then reads a command code and its complement and runs the command stage by
stage, each stage answered ACK or NACK (AN3155 §2-3). There is no timeout inside a
command: a half-sent frame leaves the ROM waiting, which stm32flash's recovery relies on
(send 0x7F again; "7F 7F" is a bad command pair and is NACKed).

The line is 8E1. Bytes with a parity or framing error are ignored, so a host that sends
8N1 sees every other command vanish; before the sync the same rule makes the auto-baud
ignore anything but a clean 0x7F (fact sheets: stm32-rom-uart.md §1/§3,
stm32-testing.md §1.1). Which of ignore/NACK the real ROM does after a parity error is
not documented; ignoring is what the USART's receiver leaves it to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from operator import xor
from typing import Protocol

from flashsh.chips.stm32 import EraseUnit, Stm32Chip
from flashsh.sims.mcu import EXTRF, ChipReset, Mcu, StartApplication
from flashsh.sims.stm32_flash import Stm32Memory

# AN3155 §2: replies and the auto-baud byte.
ACK = 0x79
NACK = 0x1F
SYNC = 0x7F

# AN3155 Table 2: command codes.
GET = 0x00
GET_VERSION = 0x01  # Get Version & Read Protection Status
GET_ID = 0x02
READ_MEMORY = 0x11
GO = 0x21
WRITE_MEMORY = 0x31
ERASE = 0x43
EXTENDED_ERASE = 0x44
WRITE_PROTECT = 0x63
WRITE_UNPROTECT = 0x73
READOUT_PROTECT = 0x82
READOUT_UNPROTECT = 0x92

#: What still works under read-out protection (AN3155 Table 2 note 2).
RDP_ALLOWED = frozenset({GET, GET_VERSION, GET_ID, READOUT_UNPROTECT})

# AN3155 §3.8: Extended Erase special codes; 0xFFF0-0xFFFC are reserved.
MASS_ERASE = 0xFFFF
BANK1_ERASE = 0xFFFE
BANK2_ERASE = 0xFFFD
SPECIAL_ERASE = 0xFFF0

# The Go vector: the ROM loads MSP from [addr] and jumps to [addr + 4].
# A RAM program that stores SYSRESETREQ into AIRCR resets the chip (stm32flash -R sends
# one); the model recognises it by the two constants in its literal pool.
AIRCR = 0xE000ED0C
AIRCR_SYSRESETREQ = 0x05FA0004

# The auto-baud measurement overflows below 1200 baud (fact sheet §1).
LOWEST_BAUD = 1200
# Option-byte erase + program time (datasheets give tens of ms; UNCONFIRMED).
OPTION_WRITE_MS = 40.0
# The STM32 reset pulse lasts at least 20 us (reference manuals, "System reset").
RESET_PULSE = 20e-6


class Refused(Exception):
    """A stage fails: the ROM answers NACK and waits for the next command."""


class Link(Protocol):
    """What the ROM needs from the board's serial line besides bytes."""

    def listen_for_sync(self) -> None: ...
    def lock_baud(self) -> int: ...
    def host_baud(self) -> int: ...


@dataclass(frozen=True)
class RomTiming:
    """How long the flash takes. None = the chip data's typical (or max) value."""

    use_max: bool = False
    erase_ms: float | None = None
    mass_erase_ms: float | None = None
    program_us: float | None = None


@dataclass
class RomFaults:
    """Faults the ROM itself shows (line faults are the Mcu's)."""

    #: Command pairs (counted from 1, across resets) answered NACK and not run.
    nack: frozenset[int] = frozenset()
    #: Received bytes (counted from 1) hit by noise: parity error, ignored.
    noise: frozenset[int] = frozenset()


class Stm32Rom:
    """One STM32's ROM bootloader on the USART."""

    name = "stm32-rom"

    def __init__(
        self,
        chip: Stm32Chip,
        memory: Stm32Memory,
        link: Link,
        *,
        timing: RomTiming | None = None,
        faults: RomFaults | None = None,
    ) -> None:
        self.chip = chip
        self.memory = memory
        self.link = link
        self.timing = timing or RomTiming()
        self.faults = faults or RomFaults()
        #: Command pairs received, bytes received, bytes ignored for line errors.
        self.commands = 0
        self.received = 0
        self.line_errors = 0
        #: What the ROM did, for tests: one tuple per command that got past its last
        #: stage, e.g. (0x31, address, length), (0x43, [pages]) or (0x44, "mass").
        self.history: list[tuple] = []
        #: Addresses Go jumped to.
        self.jumps: list[int] = []
        self.baud: int | None = None
        self.mcu: Mcu
        self._handlers: dict[int, Callable[[], None]] = {
            GET: self._get,
            GET_VERSION: self._get_version,
            GET_ID: self._get_id,
            READ_MEMORY: self._read_memory,
            GO: self._go,
            WRITE_MEMORY: self._write_memory,
            ERASE: self._erase,
            EXTENDED_ERASE: self._extended_erase,
            WRITE_PROTECT: self._write_protect,
            WRITE_UNPROTECT: self._write_unprotect,
            READOUT_PROTECT: self._readout_protect,
            READOUT_UNPROTECT: self._readout_unprotect,
        }

    # ------------------------------------------------------------------ main loop

    def run(self, mcu: Mcu) -> None:
        self.mcu = mcu
        self.baud = None
        self.link.listen_for_sync()
        mcu.uart_enable()
        if self.memory.rdp_level == 2:
            # Level 2 disables the ROM for good: the chip runs its application only.
            mcu.log("read-out protection level 2: the bootloader does not run")
            raise StartApplication
        self._autobaud()
        while True:
            self._command()

    def _autobaud(self) -> None:
        while True:
            byte = self.mcu.receive(None)
            self.received += 1
            baud = self.link.host_baud()
            noise = self.received in self.faults.noise
            clean = not (noise or byte.parity_error or byte.framing_error)
            if byte.value == SYNC and clean and baud >= LOWEST_BAUD:
                break
            self.mcu.log(f"auto-baud: ignored 0x{byte.value:02X}")
        self.baud = self.link.lock_baud()
        self.mcu.log(f"auto-baud: {self.baud} baud")
        self._send(ACK)

    def _command(self) -> None:
        code = self._getc()
        complement = self._getc()
        self.commands += 1
        if code ^ complement != 0xFF or code not in self.chip.commands:
            self.mcu.log(f"bad command pair {code:02X} {complement:02X}: NACK")
            self._send(NACK)
            return
        if self.commands in self.faults.nack:
            self.mcu.log(f"command {self.commands} (0x{code:02X}): NACK (fault)")
            self._send(NACK)
            return
        if self.memory.rdp_level and code not in RDP_ALLOWED:
            self.mcu.log(f"command 0x{code:02X} refused: read-out protection")
            self._send(NACK)
            return
        try:
            self._handlers[code]()
        except Refused as exc:
            self.mcu.log(f"command 0x{code:02X}: {exc}: NACK")
            self._send(NACK)

    # ------------------------------------------------------------------ line

    def _getc(self) -> int:
        while True:
            byte = self.mcu.receive(None)
            self.received += 1
            noise = self.received in self.faults.noise
            if noise or byte.parity_error or byte.framing_error:
                self.line_errors += 1
                what = "parity" if noise or byte.parity_error else "framing"
                self.mcu.log(f"{what} error: 0x{byte.value:02X} ignored")
                continue
            return byte.value

    def _read(self, count: int) -> bytes:
        return bytes(self._getc() for _ in range(count))

    def _send(self, *values: int) -> None:
        for value in values:
            self.mcu.transmit(value)

    def _address(self) -> int:
        """Four address bytes, MSB first, and their XOR (AN3155 §3.4)."""
        block = self._read(5)
        if reduce(xor, block) != 0:
            raise Refused("address checksum wrong")
        return int.from_bytes(block[:4], "big")

    def _count_byte(self) -> int:
        """A one-byte N followed by its complement (Read Memory's length)."""
        n, complement = self._read(2)
        if n ^ complement != 0xFF:
            raise Refused("length complement wrong")
        return n

    # ------------------------------------------------------------------ time

    def _busy_ms(self, ms: float) -> None:
        self.mcu.busy(ms / 1000)

    def _pick(self, times: tuple[float, float]) -> float:
        return times[1] if self.timing.use_max else times[0]

    def _erase_ms(self, unit: EraseUnit) -> float:
        if self.timing.erase_ms is not None:
            return self.timing.erase_ms
        return self._pick(self.chip.erase_ms(unit))

    def _mass_erase_ms(self) -> float:
        if self.timing.mass_erase_ms is not None:
            return self.timing.mass_erase_ms
        return self._pick(self.chip.mass_erase_ms)

    def _program_ms(self, length: int) -> float:
        if self.timing.program_us is not None:
            words = -(-length // self.chip.program_width)
            return words * self.timing.program_us / 1000
        return self._pick(self.chip.program_ms(length))

    def _system_reset(self, why: str) -> None:
        """Reset once the last ACK has left the line; the ROM then wants a new 0x7F."""
        self.mcu.log(f"system reset after {why}")
        at = max(self.mcu.now, self.mcu.tx.line_free) + RESET_PULSE
        self.mcu.advance(at)
        raise ChipReset(EXTRF, at)

    # ------------------------------------------------------------------ commands

    def _get(self) -> None:
        commands = self.chip.commands
        self._send(ACK, len(commands), self.chip.protocol_version, *commands, ACK)
        self.history.append((GET,))

    def _get_version(self) -> None:
        # The two option bytes are 0x00 0x00 on current parts (fact sheet §5.2).
        self._send(ACK, self.chip.protocol_version, 0x00, 0x00, ACK)
        self.history.append((GET_VERSION,))

    def _get_id(self) -> None:
        pid = self.chip.pid
        self._send(ACK, 0x01, pid >> 8, pid & 0xFF, ACK)
        self.history.append((GET_ID,))

    def _read_memory(self) -> None:
        self._send(ACK)
        address = self._address()
        if not self.memory.readable(address):
            raise Refused(f"0x{address:08X} not readable")
        self._send(ACK)
        length = self._count_byte() + 1
        if not self.memory.readable(address, length):
            raise Refused(f"0x{address:08X}+{length} runs out of the readable area")
        self.history.append((READ_MEMORY, address, length))
        self._send(ACK, *self.memory.read(address, length))

    def _go(self) -> None:
        self._send(ACK)
        address = self._address()
        if not self.memory.runnable(address):
            raise Refused(f"cannot jump to 0x{address:08X}")
        self._send(ACK)
        self.history.append((GO, address))
        self.jumps.append(address)
        if self.memory.kind_of(address) == "ram" and self._resets_the_chip(address):
            self._system_reset(f"the program at 0x{address:08X} set SYSRESETREQ")
        self.mcu.log(f"go 0x{address:08X}")
        raise StartApplication

    def _resets_the_chip(self, address: int) -> bool:
        end = min(address + 256, self.memory.free_ram[1])
        code = self.memory.read(address, end - address)
        words = {AIRCR.to_bytes(4, "little"), AIRCR_SYSRESETREQ.to_bytes(4, "little")}
        return all(word in code for word in words)

    def _write_memory(self) -> None:
        self._send(ACK)
        address = self._address()
        if not self.memory.writable(address):
            raise Refused(f"0x{address:08X} not writable")
        self._send(ACK)
        n = self._getc()
        data = self._read(n + 1)
        if reduce(xor, data, n) != self._getc():
            raise Refused("data checksum wrong")
        align = self.chip.write_align
        if address % align or len(data) % align:
            raise Refused(f"{len(data)} bytes at 0x{address:08X} not {align}-byte aligned")
        if not self.memory.writable(address, len(data)):
            raise Refused(f"0x{address:08X}+{len(data)} runs out of the writable area")
        kind = self.memory.kind_of(address)
        if kind == "flash":
            self._busy_ms(self._program_ms(len(data)))
        elif kind == "option":
            self._busy_ms(OPTION_WRITE_MS)
        if self.memory.write(address, data) == "refused":
            raise Refused(f"flash at 0x{address:08X} is not erased")
        self.history.append((WRITE_MEMORY, address, len(data)))
        self._send(ACK)
        if kind == "option":
            self._system_reset("an option-byte write")

    def _erase_units(self, indices: list[int]) -> None:
        units = [self.chip.unit(i) for i in indices]
        if None in units:
            bad = next(i for i, u in zip(indices, units, strict=True) if u is None)
            raise Refused(f"no page or sector {bad}")
        for unit in units:
            assert unit is not None
            self._busy_ms(self._erase_ms(unit))
            self.memory.erase_unit(unit)

    def _mass_erase(self, bank: int | None = None) -> None:
        time = self._mass_erase_ms() / (1 if bank is None else self.chip.banks)
        self._busy_ms(time)
        self.memory.mass_erase(bank)

    def _erase(self) -> None:
        self._send(ACK)
        n = self._getc()
        if n == 0xFF:  # global erase: FF then its complement 00
            if self._getc() != 0x00:
                raise Refused("global erase complement wrong")
            self._mass_erase()
            self.history.append((ERASE, "mass"))
            self._send(ACK)
            return
        pages = self._read(n + 1)
        if reduce(xor, pages, n) != self._getc():
            raise Refused("page list checksum wrong")
        self._erase_units(list(pages))
        self.history.append((ERASE, list(pages)))
        self._send(ACK)

    def _extended_erase(self) -> None:
        self._send(ACK)
        head = self._read(2)
        n = int.from_bytes(head, "big")
        if n >= SPECIAL_ERASE:
            if self._getc() != head[0] ^ head[1]:
                raise Refused("special erase checksum wrong")
            banks = {MASS_ERASE: None, BANK1_ERASE: 0, BANK2_ERASE: 1}
            # Bank erase exists on dual-bank parts only (AN3155 §3.8).
            if n not in banks or (banks[n] is not None and self.chip.banks < 2):
                raise Refused(f"special erase 0x{n:04X} not supported")
            self._mass_erase(banks[n])
            self.history.append((EXTENDED_ERASE, {None: "mass", 0: "bank1", 1: "bank2"}[banks[n]]))
            self._send(ACK)
            return
        body = self._read(2 * (n + 1))
        if reduce(xor, body, head[0] ^ head[1]) != self._getc():
            raise Refused("page list checksum wrong")
        pages = [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body), 2)]
        self._erase_units(pages)
        self.history.append((EXTENDED_ERASE, pages))
        self._send(ACK)

    def _write_protect(self) -> None:
        self._send(ACK)
        n = self._getc()
        sectors = self._read(n + 1)
        if reduce(xor, sectors, n) != self._getc():
            raise Refused("sector list checksum wrong")
        if not self.memory.write_protect(list(sectors)):
            raise Refused("sector set does not fit the write-protection option bytes")
        self._busy_ms(OPTION_WRITE_MS)
        self.history.append((WRITE_PROTECT, list(sectors)))
        self._send(ACK)
        self._system_reset("Write Protect")

    def _write_unprotect(self) -> None:
        self._send(ACK)
        self.memory.write_unprotect()
        self._busy_ms(OPTION_WRITE_MS)
        self.history.append((WRITE_UNPROTECT,))
        self._send(ACK)
        self._system_reset("Write Unprotect")

    def _readout_protect(self) -> None:
        self._send(ACK)
        self.memory.set_rdp_level(1)
        self._busy_ms(OPTION_WRITE_MS)
        self.history.append((READOUT_PROTECT,))
        self._send(ACK)
        self._system_reset("Readout Protect")

    def _readout_unprotect(self) -> None:
        self._send(ACK)
        self._busy_ms(self._mass_erase_ms() + OPTION_WRITE_MS)
        self.memory.readout_unprotect()
        self.history.append((READOUT_UNPROTECT,))
        self._send(ACK)
        self._system_reset("Readout Unprotect")
