"""The SAM-BA monitor's wire: ASCII commands, raw or XMODEM-CRC transfers.

A command is a letter, hex numbers without ``0x`` and a ``#`` that runs it; ``,`` moves
the number so far into the monitor's address register, which is never cleared, so
every command here sends its address with the comma (samba.md §2). Reads answer raw
little-endian bytes in binary mode (``N#``), writes answer nothing. ``S`` and ``R``
move raw bytes over USB-CDC and XMODEM-CRC blocks over a UART (§5). The Arduino
monitors add ``X`` (erase to the end), ``Y`` (buffer to flash) and ``Z`` (CRC-16) when
their version says ``[Arduino:XYZ]`` (§4).
"""

from __future__ import annotations

import struct
import time

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.numbers import hexaddr
from flashsh.transports.base import ByteLink

#: Replies are short and the monitors answer within a millisecond or two.
REPLY_TIMEOUT = 0.5
#: X and Z run over up to the whole flash before answering; bossac allows 5 s.
LONG_TIMEOUT = 5.0
#: The Arduino and uf2 monitors mishandle payload bytes that arrive in the USB packet
#: of the S command itself: pause after the command (bossac: 1 ms, samba.md §5.2).
PAYLOAD_PAUSE = 0.002
#: USB reads from flash of 64 bytes or more come back corrupt on the SAMD monitors
#: (USB DMA cannot read flash, samba.md §5.2).
SAMD_USB_READ_MAX = 63

# XMODEM (samba.md §5.1).
SOH, EOT, ACK, NAK, CAN = 0x01, 0x04, 0x06, 0x15, 0x18
XMODEM_START = b"C"
XMODEM_BLOCK = 128
XMODEM_TRIES = 5


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_xmodem(data: bytes, crc: int = 0) -> int:
    """CRC-16/XMODEM: polynomial 0x1021, initial 0, no reflection; "123456789" gives
    0x31C3. XMODEM blocks and the Arduino ``Z`` command both use it."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def xmodem_block(number: int, data: bytes) -> bytes:
    """One 133-byte XMODEM-CRC block; ``data`` is padded with 0x00 to 128 bytes."""
    data = data.ljust(XMODEM_BLOCK, b"\0")
    crc = crc16_xmodem(data)
    return bytes([SOH, number & 0xFF, ~number & 0xFF]) + data + struct.pack(">H", crc)


def parse_version(reply: bytes) -> tuple[str, frozenset[str]]:
    """The version text and the Arduino extension letters it announces.

    ``v2.0 [Arduino:XYZ] Mar 19 2018 09:45:14\\n\\r`` -> ("v2.0 [Arduino:XYZ] ...",
    {"X", "Y", "Z"}). Letters other than X, Y, Z (``P``) are kept but mean nothing here.
    """
    text = reply.split(b"\0")[0].decode("ascii", "replace").strip()
    tag = text.find("[Arduino:")
    if tag < 0:
        return text, frozenset()
    end = text.find("]", tag)
    return text, frozenset(text[tag + 9 : end if end > 0 else None])


class SambaWire:
    """One monitor on one link. ``usb`` picks raw transfers, else XMODEM."""

    def __init__(self, link: ByteLink, *, usb: bool = True) -> None:
        self.link = link
        self.usb = usb
        self.extensions: frozenset[str] = frozenset()
        #: Largest R in one command (63 on SAMD monitors over USB).
        self.read_max = 0x10000
        #: The ROMs misread powers of two above 32 bytes over USB (bossac works around).
        self.rom = True
        #: Arduino-style monitors answer G with 0x06 on a UART (samba.md §5.3).
        self.go_ack = False
        self.commands_sent = 0

    # ------------------------------------------------------------------ basics

    def send_command(self, text: str) -> None:
        self.commands_sent += 1
        self.link.write(text.encode("ascii"))

    def receive(self, size: int, timeout: float, what: str) -> bytes:
        """Exactly ``size`` bytes, or NoAnswerError naming ``what``."""
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < size:
            left = deadline - time.monotonic()
            chunk = self.link.read(size - len(out), left) if left > 0 else b""
            if not chunk:
                got = f" ({len(out)} of {size} bytes came)" if out else ""
                raise NoAnswerError(f"the SAM-BA monitor did not answer {what}{got}")
            out += chunk
        return bytes(out)

    def read_line(self, timeout: float) -> bytes:
        """Bytes up to and including ``\\n\\r``; whatever came when time runs out."""
        out = bytearray()
        deadline = time.monotonic() + timeout
        while not out.endswith(b"\n\r"):
            left = deadline - time.monotonic()
            chunk = self.link.read(1, left) if left > 0 else b""
            if not chunk:
                break
            out += chunk
        return bytes(out)

    # ------------------------------------------------------------------ session

    def binary_mode(self) -> bytes:
        """``N#``: the Arduino monitor answers ``\\n\\r``, uf2-samdx1 nothing, and a
        monitor in terminal mode a prompt; whatever comes within 0.1 s is dropped."""
        self.send_command("N#")
        return self.link.read(2, 0.1) + self.link.read(64, 0.02)

    def version(self, timeout: float = 0.3) -> bytes:
        """``V#``: the version line; uf2-samdx1 sends a NUL after it, drained here."""
        self.send_command("V#")
        line = self.read_line(timeout)
        if line.endswith(b"\n\r"):
            self.link.read(1, 0.01)  # the NUL uf2-samdx1 adds, if any
        return line

    def set_extensions(self, extensions: frozenset[str]) -> None:
        self.extensions = extensions
        self.rom = not extensions
        if extensions and self.usb:
            self.read_max = SAMD_USB_READ_MAX

    # ------------------------------------------------------------------ words

    def write_word(self, address: int, value: int) -> None:
        self.send_command(f"W{address:08X},{value & 0xFFFFFFFF:08X}#")

    def write_half(self, address: int, value: int) -> None:
        self.send_command(f"H{address:08X},{value & 0xFFFF:04X}#")

    def write_byte(self, address: int, value: int) -> None:
        self.send_command(f"O{address:08X},{value & 0xFF:02X}#")

    def read_word(self, address: int) -> int:
        self.send_command(f"w{address:08X},4#")
        return struct.unpack("<I", self.receive(4, REPLY_TIMEOUT, f"w {hexaddr(address)}"))[0]

    def read_half(self, address: int) -> int:
        self.send_command(f"h{address:08X},2#")
        return struct.unpack("<H", self.receive(2, REPLY_TIMEOUT, f"h {hexaddr(address)}"))[0]

    def read_byte(self, address: int) -> int:
        self.send_command(f"o{address:08X},1#")
        return self.receive(1, REPLY_TIMEOUT, f"o {hexaddr(address)}")[0]

    # ------------------------------------------------------------------ blocks

    def write_memory(self, address: int, data: bytes) -> None:
        """``S``: put ``data`` into target memory (SRAM) at ``address``."""
        self.send_command(f"S{address:08X},{len(data):08X}#")
        if self.usb:
            time.sleep(PAYLOAD_PAUSE)
            self.link.write(data)
        else:
            self._xmodem_send(data, address)

    def read_memory(self, address: int, length: int) -> bytes:
        """``R`` in pieces of at most ``read_max`` bytes."""
        out = bytearray()
        while len(out) < length:
            here = address + len(out)
            out += self._read_once(here, min(self.read_max, length - len(out)))
        return bytes(out)

    def _read_once(self, address: int, length: int) -> bytes:
        if not self.usb:
            self.send_command(f"R{address:08X},{length:08X}#")
            return self._xmodem_receive(length, address)
        first = b""
        if self.rom and length > 32 and not length & (length - 1):
            # The ROMs misread powers of two above 32 bytes over USB (samba.md §5.2):
            # take the first byte with o, the rest is no power of two.
            first = bytes([self.read_byte(address)])
            address, length = address + 1, length - 1
        self.send_command(f"R{address:08X},{length:08X}#")
        timeout = REPLY_TIMEOUT + length / 100_000
        return first + self.receive(length, timeout, f"R {hexaddr(address)}")

    def go(self, address: int) -> None:
        """``G``: the monitor loads SP from ``address`` and PC from ``address + 4``,
        calls it and carries on when it returns."""
        self.send_command(f"G{address:08X}#")
        if self.go_ack:
            ack = self.receive(1, REPLY_TIMEOUT, f"G {hexaddr(address)}")
            if ack[0] != ACK:
                raise ProtocolError(f"G {hexaddr(address)} answered 0x{ack[0]:02x}, not ACK")

    # ------------------------------------------------------------------ Arduino X, Y, Z

    def _extension_reply(self, letter: str, timeout: float) -> bytes:
        reply = self.read_line(timeout)
        if not reply.startswith(letter.encode()):
            raise ProtocolError(
                f"the monitor answered {letter} with {reply[:16]!r}",
                "reconnect; if it persists, the monitor is not an Arduino one",
            )
        return reply

    def erase_from(self, address: int) -> None:
        """``X``: erase from ``address`` to the end of flash; answers ``X\\n\\r``."""
        self.send_command(f"X{address:08X}#")
        self._extension_reply("X", LONG_TIMEOUT)

    def flash_from_buffer(self, buffer: int, address: int, size: int) -> None:
        """``Y``: name the SRAM buffer, then copy ``size`` bytes of it to flash at
        ``address`` (already erased). Each answers ``Y\\n\\r``."""
        self.send_command(f"Y{buffer:08X},0#")
        self._extension_reply("Y", REPLY_TIMEOUT)
        self.send_command(f"Y{address:08X},{size:08X}#")
        self._extension_reply("Y", LONG_TIMEOUT)

    def crc(self, address: int, size: int) -> int:
        """``Z``: CRC-16/XMODEM of ``size`` bytes at ``address``, computed on the chip;
        the answer is ``Z`` + 8 hex digits + ``#\\n\\r``."""
        self.send_command(f"Z{address:08X},{size:08X}#")
        reply = self._extension_reply("Z", LONG_TIMEOUT)
        try:
            return int(reply[1:9], 16)
        except ValueError:
            raise ProtocolError(f"the monitor's CRC reply {reply!r} is not hex") from None

    # ------------------------------------------------------------------ XMODEM

    def _xmodem_send(self, data: bytes, address: int) -> None:
        """The target asks with ``C``; each block is ACKed; EOT ends (samba.md §5.1)."""
        start = self.receive(1, REPLY_TIMEOUT * 2, f"S {hexaddr(address)} (XMODEM start)")
        if start != XMODEM_START:
            raise ProtocolError(f"S {hexaddr(address)}: expected XMODEM 'C', got {start!r}")
        blocks = [data[i : i + XMODEM_BLOCK] for i in range(0, len(data), XMODEM_BLOCK)]
        for number, chunk in enumerate(blocks, start=1):
            self._xmodem_put(xmodem_block(number, chunk), f"block {number}", address)
        self._xmodem_put(bytes([EOT]), "EOT", address)

    def _xmodem_put(self, frame: bytes, what: str, address: int) -> None:
        for _ in range(XMODEM_TRIES):
            self.link.write(frame)
            answer = self.link.read(1, REPLY_TIMEOUT)
            if answer == bytes([ACK]):
                return
            if answer == bytes([CAN]):
                raise ProtocolError(f"S {hexaddr(address)}: the target cancelled at {what}")
        raise ProtocolError(f"S {hexaddr(address)}: {what} not acknowledged after 5 tries")

    def _xmodem_receive(self, length: int, address: int) -> bytes:
        """The host asks with ``C``, ACKs good blocks, NAKs bad ones, ACKs the EOT."""
        out = bytearray()
        number = 1
        self.link.write(XMODEM_START)
        while len(out) < length:
            for _ in range(XMODEM_TRIES):
                block = self._xmodem_get_block(number)
                if block is not None:
                    break
                self.link.drain(quiet=0.01, limit=0.2)
                self.link.write(bytes([NAK]))
            else:
                raise ProtocolError(f"R {hexaddr(address)}: block {number} failed 5 times")
            self.link.write(bytes([ACK]))
            out += block
            number += 1
        eot = self.receive(1, REPLY_TIMEOUT, f"R {hexaddr(address)} (EOT)")
        if eot[0] != EOT:
            raise ProtocolError(f"R {hexaddr(address)}: expected EOT, got 0x{eot[0]:02x}")
        self.link.write(bytes([ACK]))
        return bytes(out[:length])

    def _xmodem_get_block(self, number: int) -> bytes | None:
        try:
            raw = self.receive(XMODEM_BLOCK + 5, REPLY_TIMEOUT * 2, f"XMODEM block {number}")
        except NoAnswerError:
            return None
        data = raw[3:-2]
        good = (
            raw[0] == SOH
            and raw[1] == number & 0xFF
            and raw[2] == ~number & 0xFF
            and struct.unpack(">H", raw[-2:])[0] == crc16_xmodem(data)
        )
        return data if good else None
