"""Klipper's serial wire format: message blocks, VLQ integers and the identify messages.

A block is LEN SEQ CONTENT CRC16 ``7e``: LEN counts the whole block (5 to 64 bytes), SEQ
is ``0x10`` plus a 4-bit sequence number, and the CRC covers LEN, SEQ and the content and
goes on the wire big-endian. Klipper's "crc16_ccitt" is CRC-16/MCRF4XX, the CRC Katapult
frames carry little-endian. The content is a list of commands (host to MCU) or one
response (MCU to host): a VLQ message id, then VLQ integers and length-prefixed buffers.
Facts: Klipper3d/klipper docs/Protocol.md, src/command.h, src/command.c, klippy/msgproto.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashsh.protocols.katapult_frame import crc16

# src/command.h and klippy/msgproto.py share these names and values.
MESSAGE_MIN = 5
MESSAGE_MAX = 64
MESSAGE_HEADER_SIZE = 2
MESSAGE_TRAILER_SIZE = 3
MESSAGE_SEQ_MASK = 0x0F
MESSAGE_DEST = 0x10
MESSAGE_SYNC = 0x7E

#: The only two ids fixed in advance (klippy/msgproto.py DefaultMessages); every other id
#: comes from the data dictionary.
IDENTIFY_RESPONSE_ID = 0
IDENTIFY_ID = 1
IDENTIFY_FORMAT = "identify offset=%u count=%c"
IDENTIFY_RESPONSE_FORMAT = "identify_response offset=%u data=%.*s"

#: What Klipper's UART code takes as a request to reboot into the bootloader: a sync byte,
#: then 32 bytes shaped like a block of length 0x20 with sequence byte 0x1c whose CRC
#: fails (src/generic/serial_irq.c console_task; Arksine/katapult scripts/flashtool.py
#: SERIAL_BL_REQ). The leading sync ends whatever partial block the MCU holds.
SERIAL_BOOTLOADER_REQUEST = b"~ \x1c Request Serial Bootloader!! ~"


def encode_vlq(value: int) -> bytes:
    """Klipper's VLQ: 7 bits a byte, most significant first; bit 0x40 of the first byte
    (with 0x20) gives the sign, so -32..95 take one byte and -2**31..2**32-1 at most five.
    Raises ValueError outside that range."""
    if not -(1 << 31) <= value < (1 << 32):
        raise ValueError(f"{value} does not fit in 32 bits")
    out = bytearray()
    # Each threshold pair is where the value stops fitting in one byte fewer
    # (src/command.c encode_int; docs/Protocol.md "Variable Length Quantities").
    if value >= 0xC000000 or value < -0x4000000:
        out.append((value >> 28) & 0x7F | 0x80)
    if value >= 0x180000 or value < -0x80000:
        out.append((value >> 21) & 0x7F | 0x80)
    if value >= 0x3000 or value < -0x1000:
        out.append((value >> 14) & 0x7F | 0x80)
    if value >= 0x60 or value < -0x20:
        out.append((value >> 7) & 0x7F | 0x80)
    out.append(value & 0x7F)
    return bytes(out)


def decode_vlq(data: bytes, pos: int = 0, *, signed: bool = True) -> tuple[int, int]:
    """(value, position after it). Values wrap to 32 bits as in the firmware; ``signed``
    reads them as int32 (%i), otherwise as uint32 (%u). Raises IndexError when ``data``
    ends inside the number."""
    byte = data[pos]
    pos += 1
    value = byte & 0x7F
    if byte & 0x60 == 0x60:
        value |= -0x20
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
    value &= 0xFFFFFFFF
    if signed and value & 0x80000000:
        value -= 1 << 32
    return value, pos


def encode_block(seq: int, content: bytes) -> bytes:
    """One message block carrying ``content`` with sequence number ``seq`` (mod 16).
    Raises ValueError when the block would exceed 64 bytes."""
    length = MESSAGE_MIN + len(content)
    if length > MESSAGE_MAX:
        raise ValueError(f"a {length}-byte block exceeds Klipper's {MESSAGE_MAX}")
    head = bytes((length, MESSAGE_DEST | (seq & MESSAGE_SEQ_MASK))) + content
    return head + crc16(head).to_bytes(2, "big") + bytes((MESSAGE_SYNC,))


def check_block(buffer: bytes | bytearray) -> int:
    """Judge the block at the start of ``buffer``: its length when it is complete and
    good, 0 when more bytes are needed, -1 when it cannot be a block. The same tests,
    in the same order, as the MCU (src/command.c command_find_block) and the host
    (klippy/msgproto.py check_packet), so a short buffer is never judged too early."""
    if len(buffer) < MESSAGE_MIN:
        return 0
    length = buffer[0]
    if not MESSAGE_MIN <= length <= MESSAGE_MAX:
        return -1
    if buffer[1] & ~MESSAGE_SEQ_MASK != MESSAGE_DEST:
        return -1
    if len(buffer) < length:
        return 0
    if buffer[length - 1] != MESSAGE_SYNC:
        return -1
    body = bytes(buffer[: length - MESSAGE_TRAILER_SIZE])
    if crc16(body) != int.from_bytes(buffer[length - 3 : length - 1], "big"):
        return -1
    return length


@dataclass(frozen=True)
class Block:
    seq: int
    content: bytes

    @property
    def is_ack(self) -> bool:
        """Empty content: an ack, or a nak when ``seq`` is not the one expected next."""
        return not self.content


class BlockReader:
    """Pulls good blocks out of the byte stream from an MCU, dropping anything else
    through the next sync byte, as klippy does (klippy/chelper/msgblock.c msgblock_check)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def wanted(self) -> int:
        """How many more bytes could complete the next block; at least 1. Reading exactly
        this many never waits for bytes that are not coming after a block ends."""
        if len(self.buffer) < MESSAGE_MIN:
            return MESSAGE_MIN - len(self.buffer)
        length = self.buffer[0]
        if MESSAGE_MIN <= length <= MESSAGE_MAX and len(self.buffer) < length:
            return length - len(self.buffer)
        return 1

    def next_block(self) -> Block | None:
        while True:
            status = check_block(self.buffer)
            if status == 0:
                return None
            if status > 0:
                block = Block(self.buffer[1] & MESSAGE_SEQ_MASK, bytes(self.buffer[2 : status - 3]))
                del self.buffer[:status]
                return block
            sync = self.buffer.find(MESSAGE_SYNC)
            del self.buffer[: sync + 1 if sync >= 0 else len(self.buffer)]


def encode_identify(offset: int, count: int) -> bytes:
    """The content of ``identify offset=OFFSET count=COUNT`` (src/basecmd.c)."""
    return encode_vlq(IDENTIFY_ID) + encode_vlq(offset) + encode_vlq(count)


def encode_identify_response(offset: int, data: bytes) -> bytes:
    """The content of ``identify_response offset=OFFSET data=DATA``. A buffer's length
    goes as one raw byte (src/command.c command_encodef), which equals its VLQ for the
    lengths a block can carry."""
    return encode_vlq(IDENTIFY_RESPONSE_ID) + encode_vlq(offset) + bytes((len(data),)) + data


def parse_identify_response(content: bytes) -> tuple[int, bytes] | None:
    """(offset, data) from a block's content, or None if it is not an identify_response."""
    try:
        msgid, pos = decode_vlq(content)
        if msgid != IDENTIFY_RESPONSE_ID:
            return None
        offset, pos = decode_vlq(content, pos, signed=False)
        size = content[pos]
    except IndexError:
        return None
    data = content[pos + 1 :]
    return (offset, data) if len(data) == size else None
