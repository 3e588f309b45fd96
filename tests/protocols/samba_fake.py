"""A SAMD21 Arduino-style monitor as a ByteLink, for tests that need a whole session
before the simulator is at hand: the parser of samba.md §2 (hex accumulator, comma
latches the address, the address register persists), raw S/R, and X/Y/Z over a flash
that only clears bits when written and refuses the BOOTPROT area like NVMCTRL."""

from __future__ import annotations

import struct

from flashsh.protocols.samba_wire import crc16_xmodem
from tests.protocols.samba_links import ScriptedLink

FLASH = 256 * 1024
ROW = 256
BOOT = 0x2000
SRAM = 0x20000000
REGISTERS = {0xE000ED00: 0x410CC601, 0x41002018: 0x10010305, 0x00804000: 0xD8E0C7FA}
NVM_CTRLA, NVM_INTFLAG, NVM_ADDR = 0x41004000, 0x41004014, 0x4100401C


class FakeSamd21(ScriptedLink):
    description = "fake-samd21"

    def __init__(self) -> None:
        super().__init__(self._feed)
        self.usb_id = "2341:004d"
        self.flash = bytearray(b"\xff" * FLASH)
        self.flash[:8] = struct.pack("<II", 0x20002DD0, 0x000001A5)  # the bootloader
        self.sram = bytearray(32 * 1024)
        self.number = 0
        self.address = 0
        self.command = "z"
        self.pending = 0  # S payload bytes still expected
        self.buffer = 0
        self.log: list[str] = []
        self.reset_requested = False
        self.registers = dict(REGISTERS, **{})
        self.registers[NVM_INTFLAG] = 1  # READY

    def _feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self.pending:
                self._poke(self.address + self.pending_at, bytes([byte]))
                self.pending_at += 1
                self.pending -= 1
                continue
            char = chr(byte)
            if char == "#":
                out += self._run()
                self.command, self.number = "z", 0
            elif char in "0123456789abcdefABCDEF":
                self.number = (self.number << 4 | int(char, 16)) & 0xFFFFFFFF
            elif char == ",":
                self.address, self.number = self.number, 0
            else:
                self.command, self.number = char, 0
        return bytes(out)

    def _peek(self, address: int, size: int) -> bytes:
        if address < FLASH:
            return bytes(self.flash[address : address + size])
        if SRAM <= address < SRAM + len(self.sram):
            return bytes(self.sram[address - SRAM : address - SRAM + size])
        return struct.pack("<I", self.registers.get(address, 0))[:size]

    def _poke(self, address: int, data: bytes) -> None:
        if SRAM <= address < SRAM + len(self.sram):
            self.sram[address - SRAM : address - SRAM + len(data)] = data
        elif address == 0xE000ED0C:
            self.reset_requested = True
        elif address == NVM_ADDR:
            self.registers[NVM_ADDR] = struct.unpack("<I", data)[0]
        elif address == NVM_INTFLAG:
            self.registers[NVM_INTFLAG] &= ~struct.unpack("<I", data)[0] | 1
        elif address == NVM_CTRLA and data[:2] == b"\x02\xa5":  # ER, key 0xA5
            row = self.registers.get(NVM_ADDR, 0) * 2
            if row < BOOT:
                self.registers[NVM_INTFLAG] |= 2  # ERROR: BOOTPROT
            else:
                self.flash[row : row + ROW] = b"\xff" * ROW
        else:
            self.log.append(f"write to {address:#x} ignored")

    def _run(self) -> bytes:
        c, n, a = self.command, self.number, self.address
        self.log.append(f"{c}{a:x},{n:x}")
        if c == "N":
            return b"\n\r"
        if c == "V":
            return b"v2.0 [Arduino:XYZ] Mar 19 2018 09:45:14\n\r"
        if c in "wo":
            return self._peek(a, 4 if c == "w" else 1)
        if c == "W":
            self._poke(a, struct.pack("<I", n))
        elif c == "S":
            self.pending, self.pending_at = n, 0
        elif c == "R":
            return self._peek(a, n)
        elif c == "X":
            for row in range(n - n % ROW, FLASH, ROW):
                if row >= BOOT:  # BOOTPROT: the hardware refuses, X does not tell
                    self.flash[row : row + ROW] = b"\xff" * ROW
            return b"X\n\r"
        elif c == "Y":
            if n == 0:
                self.buffer = a
            else:
                data = self._peek(self.buffer, n)
                if a >= BOOT:
                    for i, value in enumerate(data):
                        self.flash[a + i] &= value  # programming only clears bits
            return b"Y\n\r"
        elif c == "Z":
            return b"Z%08X#\n\r" % crc16_xmodem(self._peek(a, n))
        return b""


class _Sam3xBus:
    """Word access for the copy routine: SRAM, and stores into flash going to the
    plane's latch (which wraps per page), as on the EEFC."""

    def __init__(self, fake: FakeSam3x) -> None:
        self.fake = fake

    def get(self, address: int, default: int = 0) -> int:
        return struct.unpack("<I", self.fake._peek(address, 4))[0]

    def __getitem__(self, address: int) -> int:
        return self.get(address)

    def __setitem__(self, address: int, value: int) -> None:
        self.fake._poke(address, struct.pack("<I", value))

    def __contains__(self, address: int) -> bool:
        return self.fake.latch_writes.count(address) > 0


class FakeSam3x(ScriptedLink):
    """The SAM3X8E ROM monitor on its native USB port: raw S/R, G runs the routine
    through the Thumb decoder, two EEFC planes, GPNVM, RSTC."""

    description = "fake-sam3x"
    BASE, SIZE, PAGE = 0x80000, 0x80000, 256
    EEFC = (0x400E0A00, 0x400E0C00)

    def __init__(self) -> None:
        super().__init__(self._feed)
        self.usb_id = "03eb:6124"
        self.flash = bytearray(b"\xff" * self.SIZE)
        self.sram = bytearray(0x10000)
        self.latch = [bytearray(b"\xff" * self.PAGE) for _ in self.EEFC]
        self.latch_writes: list[int] = []
        self.gpnvm = 0
        self.frr: list[int] = []
        self.number = self.address = self.pending = self.pending_at = 0
        self.command = "z"
        self.log: list[str] = []
        self.fcr: list[tuple[int, int, int]] = []
        self.reset_requested = False
        self.registers = {0xE000ED00: 0x412FC230, 0x400E0940: 0x285E0A60}

    _feed = FakeSamd21._feed

    def _peek(self, address: int, size: int) -> bytes:
        if self.BASE <= address < self.BASE + self.SIZE:
            return bytes(self.flash[address - self.BASE : address - self.BASE + size])
        if address < 0x80000:  # GPNVM1 = 0: the ROM is mapped at 0
            return struct.pack("<I", 0x20001000)[:size]
        if SRAM <= address < SRAM + len(self.sram):
            return bytes(self.sram[address - SRAM : address - SRAM + size])
        for plane, base in enumerate(self.EEFC):
            if address == base + 8:
                return struct.pack("<I", 1)[:size]  # FRDY
            if address == base + 12 and plane == 0:
                return struct.pack("<I", self.frr.pop(0) if self.frr else 0)[:size]
        return struct.pack("<I", self.registers.get(address, 0))[:size]

    def _poke(self, address: int, data: bytes) -> None:
        if self.BASE <= address < self.BASE + self.SIZE:
            offset = address - self.BASE
            plane = offset // (self.SIZE // 2)
            at = offset % self.PAGE
            self.latch[plane][at : at + 4] = data
            self.latch_writes.append(address)
        elif SRAM <= address < SRAM + len(self.sram):
            self.sram[address - SRAM : address - SRAM + len(data)] = data
        elif address == 0x400E1A00 and data == struct.pack("<I", 0xA500000D):
            self.reset_requested = True
        else:
            for plane, base in enumerate(self.EEFC):
                if address == base + 4:
                    self._eefc(plane, struct.unpack("<I", data)[0])

    def _eefc(self, plane: int, value: int) -> None:
        assert value >> 24 == 0x5A, "bad FKEY"
        cmd, arg = value & 0xFF, (value >> 8) & 0xFFFF
        self.fcr.append((plane, cmd, arg))
        start = plane * (self.SIZE // 2) + arg * self.PAGE
        if cmd in (0x01, 0x03):  # WP, EWP
            if cmd == 0x03:
                self.flash[start : start + self.PAGE] = b"\xff" * self.PAGE
            for i, byte in enumerate(self.latch[plane]):
                self.flash[start + i] &= byte
            self.latch[plane][:] = b"\xff" * self.PAGE
        elif cmd == 0x05:  # EA
            half = self.SIZE // 2
            self.flash[plane * half : (plane + 1) * half] = b"\xff" * half
        elif cmd == 0x0B:
            self.gpnvm |= 1 << arg
        elif cmd == 0x0C:
            self.gpnvm &= ~(1 << arg)
        elif cmd == 0x0D:
            self.frr = [self.gpnvm]

    def _run(self) -> bytes:
        c, n, a = self.command, self.number, self.address
        self.log.append(f"{c}{a:x},{n:x}")
        if c == "N":
            return b"\n\r"
        if c == "V":
            return b"v1.1 Dec 15 2010 19:25:04\n\r"
        if c in "wo":
            return self._peek(a, 4 if c == "w" else 1)
        if c == "W":
            self._poke(a, struct.pack("<I", n))
        elif c == "S":
            self.pending, self.pending_at = n, 0
        elif c == "R":
            return self._peek(a, n)
        elif c == "G":
            from tests.protocols.samba_links import run_thumb

            run_thumb(_Sam3xBus(self), n)  # type: ignore[arg-type]
        return b""
