"""The STM32 ROM bootloader's USART framing (ST AN3155), below any notion of a chip.

Every command is its code and the code's complement; the ROM answers each stage with
ACK or NACK. Multi-byte blocks end with the XOR of their bytes; a single-byte parameter
is followed by its complement instead. Facts: /work/shared/protocols/stm32-rom-uart.md
(§3 synchronisation, §4 framing, §5 commands).
"""

from __future__ import annotations

import time
from functools import reduce

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.transports.base import ByteLink

# AN3155 §2/§3 replies and the auto-baud byte.
ACK = 0x79
NACK = 0x1F
SYNC = 0x7F

# AN3155 Table 2, command codes.
GET = 0x00
GET_VERSION = 0x01  # "Get Version & Read Protection Status"
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
GET_CHECKSUM = 0xA1

COMMAND_NAMES = {
    GET: "Get",
    GET_VERSION: "Get Version",
    GET_ID: "Get ID",
    READ_MEMORY: "Read Memory",
    GO: "Go",
    WRITE_MEMORY: "Write Memory",
    ERASE: "Erase",
    EXTENDED_ERASE: "Extended Erase",
    WRITE_PROTECT: "Write Protect",
    WRITE_UNPROTECT: "Write Unprotect",
    READOUT_PROTECT: "Readout Protect",
    READOUT_UNPROTECT: "Readout Unprotect",
    GET_CHECKSUM: "Get Checksum",
}

#: Extended Erase special codes (AN3155 §3.8): mass erase, bank 1, bank 2.
MASS_ERASE_EXTENDED = 0xFFFF
#: Erase (0x43) takes 0xFF as its page count byte to mean "global erase".
MASS_ERASE_LEGACY = 0xFF

#: Largest Read Memory / Write Memory transfer (the length byte holds N-1).
MAX_TRANSFER = 256

#: Wait for the answer to a 0x7F; stm32flash reads with a 0.5 s termios timeout.
SYNC_TIMEOUT = 0.5
#: Data replies (Get lists, Read Memory data) come without gaps; an ACK for a plain stage
#: comes at once. Only erase, write and protection ACKs get longer (the caller says).
REPLY_TIMEOUT = 0.5


def command_name(code: int) -> str:
    return f"{COMMAND_NAMES.get(code, 'command')} (0x{code:02X})"


def checksum(block: bytes) -> int:
    """XOR of every byte: the check byte after an address, a data or a page block."""
    return reduce(lambda a, b: a ^ b, block, 0)


def with_checksum(block: bytes) -> bytes:
    return block + bytes([checksum(block)])


def with_complement(value: int) -> bytes:
    """A command code or one-byte parameter, then its complement (XOR of the pair 0xFF)."""
    return bytes([value, value ^ 0xFF])


def address_block(address: int) -> bytes:
    """32-bit big-endian address and its XOR (AN3155 §3.4)."""
    return with_checksum(address.to_bytes(4, "big"))


class Nack(ProtocolError):
    """The ROM answered NACK. ``stage`` is "command" when it refused the command itself
    (not offered, or read-out protection is on), else which block it refused."""

    def __init__(self, code: int, stage: str) -> None:
        self.code = code
        self.stage = stage
        super().__init__(f"the STM32 ROM refused {command_name(code)} at the {stage} stage")


class RomLink:
    """Stages of AN3155 commands over a ByteLink: each write waits for its ACK."""

    def __init__(self, link: ByteLink) -> None:
        self.link = link

    def wire_time(self, count: int) -> float:
        """Seconds ``count`` bytes take on the line (11 bits each at 8E1)."""
        return count * 11 / max(self.link.baudrate, 1200)

    def read_exact(self, size: int, timeout: float, what: str) -> bytes:
        deadline = time.monotonic() + timeout + self.wire_time(size)
        data = b""
        while len(data) < size:
            left = deadline - time.monotonic()
            chunk = self.link.read(size - len(data), left) if left > 0 else b""
            if not chunk:
                if not data:
                    raise NoAnswerError(
                        f"no answer from the STM32 ROM to {what}",
                        "the chip may have been reset or left the bootloader; "
                        "press reset with BOOT0 high and run the command again",
                    )
                raise ProtocolError(
                    f"short answer to {what}: {len(data)} of {size} bytes",
                    "a byte was lost on the line; try a lower --baud",
                )
            data += chunk
        return data

    def expect_ack(self, code: int, stage: str, timeout: float = REPLY_TIMEOUT) -> None:
        """Wait for the answer to one stage; raise Nack or a ProtocolError."""
        reply = self.read_exact(1, timeout, f"{command_name(code)} ({stage} stage)")[0]
        if reply == ACK:
            return
        if reply == NACK:
            raise Nack(code, stage)
        raise ProtocolError(
            f"unexpected byte 0x{reply:02x} from the STM32 ROM after the {stage} stage "
            f"of {command_name(code)}",
            "the line is noisy or the chip was reset; try a lower --baud",
        )

    def command(self, code: int, timeout: float = REPLY_TIMEOUT) -> None:
        """Send a command code and its complement; wait for the ACK."""
        self.link.write(with_complement(code))
        self.expect_ack(code, "command", timeout)

    def send(self, code: int, block: bytes, stage: str, timeout: float = REPLY_TIMEOUT) -> None:
        """Send one block (already carrying its check byte); wait for its ACK."""
        self.link.write(block)
        self.expect_ack(code, stage, timeout + self.wire_time(len(block)))

    def sync(self, attempts: int = 2, timeout: float = SYNC_TIMEOUT) -> str | None:
        """Send 0x7F until the ROM answers (AN3155 §2, fact sheet §3).

        A ROM fresh from reset measures the baud rate on the first 0x7F and answers ACK.
        One that an earlier run already synchronised takes a lone 0x7F as the first half
        of a command and says nothing; the second 0x7F completes the invalid pair 7F 7F,
        which it answers with NACK. Either answer leaves it waiting for a command.
        Returns "ack", "nack", or None when nothing (or something else) answered.
        """
        for _ in range(attempts):
            self.link.write(bytes([SYNC]))
            reply = self.link.read(1, timeout)
            if reply == bytes([ACK]):
                return "ack"
            if reply == bytes([NACK]):
                return "nack"
            if reply:
                return None  # a talking application or another bootloader
        return None

    def get(self) -> tuple[int, tuple[int, ...]]:
        """Get (0x00): (protocol version byte, command codes offered)."""
        self.command(GET)
        count = self.read_exact(1, REPLY_TIMEOUT, "Get")[0]
        body = self.read_exact(count + 1, REPLY_TIMEOUT, "Get")
        self.expect_ack(GET, "reply")
        return body[0], tuple(body[1:])

    def get_version(self) -> tuple[int, bytes]:
        """Get Version (0x01): (version byte, the two option bytes that follow).

        The STM32L412/422 ROM v13.1 sends an extra ACK before the version (fact sheet
        §5.2); a version byte of 0x79 is no version, so one leading ACK is skipped.
        """
        self.command(GET_VERSION)
        body = self.read_exact(3, REPLY_TIMEOUT, "Get Version")
        if body[0] == ACK:
            body = body[1:] + self.read_exact(1, REPLY_TIMEOUT, "Get Version")
        self.expect_ack(GET_VERSION, "reply")
        return body[0], body[1:]

    def get_id(self) -> bytes:
        """Get ID (0x02): the product ID bytes (two on every STM32; read N+1 of them)."""
        self.command(GET_ID)
        count = self.read_exact(1, REPLY_TIMEOUT, "Get ID")[0]
        pid = self.read_exact(count + 1, REPLY_TIMEOUT, "Get ID")
        self.expect_ack(GET_ID, "reply")
        return pid

    def read_memory(self, address: int, length: int) -> bytes:
        """Read Memory (0x11): 1..256 bytes. The data has no ACK after it."""
        if not 1 <= length <= MAX_TRANSFER:
            raise ValueError(f"Read Memory moves 1..{MAX_TRANSFER} bytes, not {length}")
        self.command(READ_MEMORY)
        self.send(READ_MEMORY, address_block(address), "address")
        self.send(READ_MEMORY, with_complement(length - 1), "length")
        return self.read_exact(length, REPLY_TIMEOUT, f"Read Memory at 0x{address:08x}")

    def write_memory(self, address: int, data: bytes, timeout: float) -> None:
        """Write Memory (0x31): 1..256 bytes, already aligned and padded by the caller.
        ``timeout`` covers programming them."""
        if not 1 <= len(data) <= MAX_TRANSFER:
            raise ValueError(f"Write Memory moves 1..{MAX_TRANSFER} bytes, not {len(data)}")
        self.command(WRITE_MEMORY)
        self.send(WRITE_MEMORY, address_block(address), "address")
        self.send(WRITE_MEMORY, with_checksum(bytes([len(data) - 1]) + data), "data", timeout)

    def go(self, address: int) -> None:
        """Go (0x21): the ROM ACKs the address, then jumps; nothing else comes back."""
        self.command(GO)
        self.send(GO, address_block(address), "address")

    def erase_pages(self, pages: list[int], extended: bool, timeout: float) -> None:
        """Erase (0x43, one-byte page numbers) or Extended Erase (0x44, two-byte ones)."""
        if extended:
            block = (len(pages) - 1).to_bytes(2, "big")
            block += b"".join(page.to_bytes(2, "big") for page in pages)
            self.command(EXTENDED_ERASE)
            self.send(EXTENDED_ERASE, with_checksum(block), "page list", timeout)
        else:
            block = bytes([len(pages) - 1, *pages])
            self.command(ERASE)
            self.send(ERASE, with_checksum(block), "page list", timeout)

    def mass_erase(self, extended: bool, timeout: float) -> None:
        """Global erase: 0x43 with FF 00, or 0x44 with FF FF 00 (the XOR of FF FF)."""
        if extended:
            self.command(EXTENDED_ERASE)
            code = MASS_ERASE_EXTENDED.to_bytes(2, "big")
            self.send(EXTENDED_ERASE, with_checksum(code), "mass erase", timeout)
        else:
            self.command(ERASE)
            self.send(ERASE, with_complement(MASS_ERASE_LEGACY), "mass erase", timeout)

    def write_protect(self, sectors: list[int], timeout: float) -> None:
        """Write Protect (0x63): the complete new set of protected sectors. Resets."""
        self.command(WRITE_PROTECT)
        block = bytes([len(sectors) - 1, *sectors])
        self.send(WRITE_PROTECT, with_checksum(block), "sector list", timeout)

    def two_ack_command(self, code: int, timeout: float) -> None:
        """Write Unprotect, Readout Protect, Readout Unprotect: ACK, work, ACK, reset."""
        self.command(code)
        self.expect_ack(code, "completion", timeout)
