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
