"""The SAM-BA monitor loop, as the Arduino Zero bootloader and uf2-samdx1 write it.

Sources: arduino/ArduinoCore-samd bootloaders/zero/sam_ba_monitor.c
(``sam_ba_monitor_loop``) and sam_ba_serial.c (XMODEM), adafruit/uf2-samdx1
src/sam_ba_monitor.c and src/flash_samd51.c; the ROMs of SAM3X/SAM4E are taken to parse
the same way (samba.md §2: UNCONFIRMED for ROM internals). Per received packet (one USB
packet of up to 64 bytes, or one byte from the UART):

* a hex digit shifts into ``current_number``; ``,`` moves it into ``ptr_data`` (the
  address, which persists between commands); 0xFF is skipped; ``#`` executes; any other
  byte becomes the command letter and clears ``current_number``;
* ``S`` copies whatever followed the ``#`` in the same packet, then reads the rest of
  the payload into the *start* of the buffer again (the packet bug, samba.md §5.2); the
  simulator does that only with ``fault=packet`` and otherwise records that it happened;
* terminal mode (``T#``) prints reads as ``0x`` + hex + ``\\n\\r`` and a ``>`` prompt;
  uf2-samdx1 compiles it out (``USE_CDC_TERMINAL 0``);
* uf2-samdx1 only advances its byte pointer past bytes other than 0xFF, so a 0xFF makes
  it skip the rest of that packet (its loop: ``if (*ptr != 0xff) { ... ptr++; }``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flashsh.sims.samba_bus import BusFault
from flashsh.sims.samba_chips import Chip
from flashsh.sims.samba_nvm import NVMCTRL
from flashsh.sims.thumb import ThumbFault, run

SOH, EOT, ACK, NAK, CAN = 0x01, 0x04, 0x06, 0x15, 0x18
BLOCK = 128
#: SAMD monitors' USB R of 64 bytes or more points the USB DMA at the source, which
#: cannot read flash (adafruit/uf2-samdx1 src/cdc_enumerate.c USB_WriteCore "data must
#: be in RAM!"; arduino/ArduinoCore-samd bootloaders/zero/board_driver_usb.c).
USB_EP_SIZE = 64
SRAM_START = 0x20000000
#: The Arduino Zero monitor redirects secured flash reads here (sam_ba_monitor.c, 'R').
SECURE_READ_REDIRECT = 0x20005000
SKETCH_START = 0x2000


def crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0), as ``serial_add_crc`` computes it."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1 ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


class Link(Protocol):
    """The monitor's interface (USB-CDC or UART), provided by the board."""

    usb: bool

    def packet(self) -> bytes: ...
    def get(self, timeout: float | None) -> int | None: ...
    def put(self, data: bytes) -> None: ...
    def wait_until(self, t: float) -> None: ...


class Crashed(Exception):
    """The monitor hit a fault (bus error, runaway applet): silent until reset."""


@dataclass(frozen=True)
class Variant:
    """How one monitor build behaves where the builds differ."""

    name: str  # "rom", "zero", "uf2"
    version: bytes
    terminal: bool = True  # T#/N# handled (not in uf2-samdx1)
    go_ack: bool = True  # 0x06 after G on the UART
    xyz: bool = False
    secure_aware: bool = False  # the Arduino "P" build
    #: SAM3 ROM: R straight from flash gives zeros (shumatech/BOSSA src/EefcFlash.cpp
    #: readPage: "The SAM3 firmware has a bug where it returns all zeros for reads
    #: directly from the flash").
    flash_r_zeros: bool = False
    usb_r_ram_only: bool = False
    ff_skips_packet: bool = False
    xmodem_cancel: bool = False  # Arduino: a bad block ends the transfer with CAN


@dataclass
class Transfer:
    """One S or R, for tests: where, how much, and whether the payload began in the
    command's USB packet."""

    command: str
    address: int
    length: int
    shared_packet: bool = False
    link: str = "usb"


class Monitor:
    def __init__(
        self,
        chip: Chip,
        link: Link,
        variant: Variant,
        *,
        packet_bug: bool = False,
        security: bool = False,
        faults: Callable[[str], bool] = lambda kind: False,
        log: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.chip = chip
        self.bus = chip.bus
        self.link = link
        self.variant = variant
        self.packet_bug = packet_bug
        self.security = security and variant.secure_aware
        self.fault = faults
        self.log = log
        self.command = ord("z")
        self.number = 0
        self.address = 0
        self.terminal = False
        self.j = 0  # the firmware's uint8_t j, kept across S commands as it is there
        self.y_source = 0
        self.erased_from = 0
        self.transfers: list[Transfer] = []
        self.commands: list[str] = []

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Serve until a reset or a crash (raises Crashed)."""
        while True:
            self.feed(self.link.packet())

    def feed(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            byte = data[i]
            if byte == 0xFF:
                if self.variant.ff_skips_packet:
                    return
                i += 1
                continue
            if byte == ord("#"):
                i = self.execute(data, i)
            elif chr(byte) in "0123456789":
                self.number = (self.number << 4 | byte - 0x30) & 0xFFFFFFFF
            elif ord("A") <= byte <= ord("F"):
                self.number = (self.number << 4 | byte - 0x37) & 0xFFFFFFFF
            elif ord("a") <= byte <= ord("f"):
                self.number = (self.number << 4 | byte - 0x57) & 0xFFFFFFFF
            elif byte == ord(","):
                self.address, self.number = self.number, 0
            else:
                self.command, self.number = byte, 0
            i += 1

    # ------------------------------------------------------------------ commands

    def execute(self, data: bytes, i: int) -> int:
        """Run the command whose ``#`` is ``data[i]``; return the index of the last
        byte it consumed."""
        command, n, address = chr(self.command), self.number, self.address
        self.commands.append(f"{command}{address:08X},{n:X}")
        if self.terminal and self.variant.terminal:
            self.link.put(b"\n\r")
        try:
            if command == "S":
                i = self.send_to_target(data, i, address, n)
            else:
                self.simple(command, address, n)
        except BusFault as exc:
            self.log(f"monitor fault in {command}: {exc}")
            raise Crashed(str(exc)) from exc
        self.command, self.number = ord("z"), 0
        if self.terminal and self.variant.terminal:
            self.link.put(b">")
        return i

    def simple(self, command: str, address: int, n: int) -> None:  # noqa: C901, PLR0912
        v = self.variant
        secured = self.security
        if command == "R":
            if secured and address < SRAM_START:
                address = SECURE_READ_REDIRECT
            self.receive_from_target(address, n)
        elif command == "O":
            self.bus.write(address, 1, n & 0xFF)
        elif command == "H":
            self.bus.write(address, 2, n & 0xFFFF)
        elif command == "W":
            self.bus.write(address, 4, n)
        elif command in "ohw":
            size = {"o": 1, "h": 2, "w": 4}[command]
            if secured and 3 < address < SRAM_START:
                # 'o' then reads current_number itself; 'h' and 'w' send 0.
                value = n & 0xFF if command == "o" else 0
            else:
                value = self.bus.read(address, size)
            self.put_term(value, size)
        elif command == "G":
            if not secured:
                self.go(n)
        elif command == "T" and v.terminal:
            self.terminal = True
            self.link.put(b"\n\r")
        elif command == "N" and v.terminal:
            if not self.terminal:
                self.link.put(b"\n\r")
            self.terminal = False
        elif command == "V":
            self.link.put(v.version)
        elif command == "X" and v.xyz:
            self.erase_to_end(SKETCH_START if secured else n)
            self.link.put(b"X\n\r")
        elif command == "Y" and v.xyz:
            if n == 0:
                self.y_source = address
            else:
                if secured and self.erased_from != SKETCH_START:
                    self.erase_to_end(SKETCH_START)
                self.write_words(address, self.y_source, n // 4)
            self.link.put(b"Y\n\r")
        elif command == "Z" and v.xyz:
            crc = crc16(self.bus.read_block(address, n))
            self.link.put(b"Z%08X#\n\r" % crc)

    def put_term(self, value: int, size: int) -> None:
        if self.terminal and self.variant.terminal:
            self.link.put(b"0x%0*X\n\r" % (2 * size, value))
        else:
            self.link.put(value.to_bytes(size, "little"))

    # ------------------------------------------------------------------ G

    def go(self, vector: int) -> None:
        sp = self.bus.read(vector, 4)
        pc = self.bus.read(vector + 4, 4)
        try:
            core = run(self.bus, sp, pc)
        except ThumbFault as exc:
            self.log(f"G 0x{vector:08X}: {exc}")
            raise Crashed(str(exc)) from exc
        self.chip.ctx.log(f"G 0x{vector:08X}: returned after {core.steps} instructions")
        if not self.link.usb and self.variant.go_ack:
            self.link.put(bytes([ACK]))

    # ------------------------------------------------------------------ S and R

    def send_to_target(self, data: bytes, i: int, address: int, n: int) -> int:
        rest = data[i + 1 :]
        shared = bool(rest) and n > 0
        self.transfers.append(Transfer("S", address, n, shared, "usb" if self.link.usb else "uart"))
        if shared:
            self.log(f"S 0x{address:08X}: payload began in the command's packet")
        if not self.link.usb:
            # UART: one byte per packet, so nothing follows the '#' here.
            self.receive_xmodem(address, n)
            return i
        take = min(len(rest), n)
        self.bus.write_block(address, rest[:take])
        if self.packet_bug:
            self.j = take & 0xFF  # uint8_t j in both sources
            if self.j < n:
                # The rest goes to the start of the buffer again.
                self.bus.write_block(address, self.read_raw(n - self.j))
        elif take < n:
            self.bus.write_block(address + take, self.read_raw(n - take))
        return i + take

    def read_raw(self, count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            value = self.link.get(None)
            if value is not None:
                out.append(value)
        return bytes(out)

    def receive_from_target(self, address: int, n: int) -> None:
        self.transfers.append(Transfer("R", address, n, False, "usb" if self.link.usb else "uart"))
        in_flash = address < SRAM_START
        if in_flash and self.variant.flash_r_zeros:
            data = bytes(n)
        else:
            data = self.bus.read_block(address, n)
        if self.link.usb:
            if self.variant.usb_r_ram_only and n >= USB_EP_SIZE and in_flash:
                # What the USB DMA fetches from a flash address is not documented; the
                # simulator sends every byte inverted so no host can take it for data.
                self.log(f"R 0x{address:08X},{n}: USB DMA from flash, data corrupt")
                data = bytes(b ^ 0xFF for b in data)
            self.link.put(data)
        else:
            self.send_xmodem(data, n)

    # ------------------------------------------------------------------ XMODEM

    def receive_xmodem(self, address: int, length: int) -> None:
        """serial_getdata_xmd: 'C' until the host starts, then blocks to EOT."""
        for _ in range(100):
            self.link.put(b"C")
            first = self.link.get(0.1)
            if first is not None:
                break
        else:
            return
        block, left, at = 1, length, address
        c: int | None = first
        while True:
            if c == SOH:
                head = self.read_raw(2)
                body = self.read_raw(BLOCK)
                crc = self.read_raw(2)
                good = crc16(body) == int.from_bytes(crc, "big")
                good = good and head[0] == block & 0xFF and head[1] == ~block & 0xFF
                if self.fault("xnak"):
                    good = False
                keep = min(left, BLOCK) if length else BLOCK
                self.bus.write_block(at, body[:keep])
                if not good:
                    self.log(f"XMODEM block {block} from the host refused")
                    if self.variant.xmodem_cancel:
                        self.link.put(bytes([CAN]))
                        return
                    self.link.put(bytes([NAK]))
                else:
                    self.link.put(bytes([ACK]))
                    block += 1
                    at += BLOCK
                    left = max(left - BLOCK, 0)
            elif c == EOT:
                self.link.put(bytes([ACK]))
                return
            else:
                return
            c = self.link.get(None)

    def send_xmodem(self, data: bytes, length: int) -> None:
        """serial_putdata_xmd: wait for 'C' or NAK, blocks padded with 0x00, EOT."""
        while True:
            c = self.link.get(None)
            if c in (NAK, ord("C")):
                break
            if c == ord("q"):
                return
        total = -(-length // BLOCK) * BLOCK
        block, sent, size_left = 1, 0, length
        while sent < total:
            if self.variant.xmodem_cancel:
                # The Arduino code counts size_of_data down in putPacket itself, so a
                # resent block pads from where the failed one stopped.
                chunk = bytes(data[sent + k] if size_left - k > 0 else 0 for k in range(BLOCK))
                size_left = max(size_left - BLOCK, 0)
            else:
                chunk = data[sent : sent + BLOCK].ljust(BLOCK, b"\0")
            crc = crc16(chunk)
            if self.fault("xcrc"):
                crc ^= 0xFFFF
            self.link.put(
                bytes([SOH, block & 0xFF, ~block & 0xFF]) + chunk + crc.to_bytes(2, "big")
            )
            reply = self.link.get(None)
            if reply == ACK:
                block += 1
                sent += BLOCK
        self.link.put(bytes([EOT]))
        self.link.get(None)

    # ------------------------------------------------------------------ X and Y

    def wait_ready(self) -> None:
        nvm = self.chip.nvm
        if nvm is not None:
            self.link.wait_until(nvm.busy_until)

    def erase_to_end(self, address: int) -> None:
        family = self.chip.spec.family
        self.erased_from = address
        if family == "samd21":
            # eraseFlash: ER per 256-byte row up to PAGE_SIZE * PAGES, errors ignored.
            param = self.bus.read(NVMCTRL + 0x08, 4)
            end = (8 << (param >> 16 & 7)) * (param & 0xFFFF)
            while address < end:
                self.bus.write(NVMCTRL + 0x1C, 4, address // 2)
                self.bus.write(NVMCTRL + 0x00, 2, 0xA502)
                self.wait_ready()
                address += 256
        elif family == "samd51":
            # flash_erase_to_end: EB every 8 KiB from the address itself.
            while address < self.chip.spec.flash_size:
                self.wait_ready()
                self.bus.write(NVMCTRL + 0x14, 4, address)
                self.bus.write(NVMCTRL + 0x04, 2, 0xA501)
                self.wait_ready()
                address += 8192

    def write_words(self, dst: int, src: int, count: int) -> None:
        family = self.chip.spec.family
        bus = self.bus
        if family == "samd21":
            # Automatic page write (MANW = 0), PBC before each page, WP after it.
            bus.write(NVMCTRL + 0x04, 4, bus.read(NVMCTRL + 0x04, 4) & ~0x80)
            page_words = 64 // 4
            while count:
                bus.write(NVMCTRL, 2, 0xA544)
                self.wait_ready()
                n = min(page_words, count)
                for k in range(n):
                    bus.write(dst + 4 * k, 4, bus.read(src + 4 * k, 4))
                bus.write(NVMCTRL, 2, 0xA504)
                self.wait_ready()
                dst, src, count = dst + 4 * n, src + 4 * n, count - n
        elif family == "samd51":
            # flash_write_words: manual mode, PBC, then a WQW per quad word (0xFF fill).
            bus.write(NVMCTRL, 2, bus.read(NVMCTRL, 2) & ~0x30)
            self.wait_ready()
            bus.write(NVMCTRL + 0x04, 2, 0xA515)
            self.wait_ready()
            while count:
                n = min(4, count)
                self.wait_ready()
                for k in range(4):
                    word = bus.read(src + 4 * k, 4) if k < n else 0xFFFFFFFF
                    bus.write(dst + 4 * k, 4, word)
                bus.write(NVMCTRL + 0x14, 4, dst)
                bus.write(NVMCTRL + 0x04, 2, 0xA504)
                dst, src, count = dst + 4 * n, src + 4 * n, count - n


def words_at(chip: Chip, address: int) -> tuple[int, int]:
    """The two words of a vector table at ``address`` (SP, reset handler)."""
    data = bytes(chip.bus.read(address + i, 1) for i in range(8))
    sp, reset = struct.unpack("<II", data)
    return sp, reset
