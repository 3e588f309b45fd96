"""Katapult's frame format, shared by CAN, UART and USB-CDC.

A frame is ``01 88`` CMD LEN PAYLOAD CRC16 ``99 03``: LEN counts 32-bit words of payload,
every integer in the payload is little-endian, and the CRC (Klipper's "crc16_ccitt",
which is CRC-16/MCRF4XX) covers CMD, LEN and the payload and goes on the wire
little-endian. Facts: docs/protocols/README.md and Arksine/katapult src/command.c.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = b"\x01\x88"
TRAILER = b"\x99\x03"
#: The node accepts frames of 8 to 128 bytes (src/command.h MESSAGE_MIN/MAX).
FRAME_MIN = 8
FRAME_MAX = 128

CONNECT = 0x11
SEND_BLOCK = 0x12
SEND_EOF = 0x13
REQUEST_BLOCK = 0x14
COMPLETE = 0x15
GET_CANBUS_ID = 0x16

ACK = 0xA0
NACK = 0xF1
COMMAND_ERROR = 0xF2
BUSY = 0xF3

NAMES = {
    CONNECT: "CONNECT",
    SEND_BLOCK: "SEND_BLOCK",
    SEND_EOF: "SEND_EOF",
    REQUEST_BLOCK: "REQUEST_BLOCK",
    COMPLETE: "COMPLETE",
    GET_CANBUS_ID: "GET_CANBUS_ID",
    ACK: "ACK",
    NACK: "NACK",
    COMMAND_ERROR: "COMMAND_ERROR",
    BUSY: "BUSY",
}


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/MCRF4XX: reflected 0x1021, init 0xFFFF, no final XOR (check 0x6F91).

    Not binascii.crc_hqx, which is the unreflected CCITT-FALSE variant."""
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def build(command: int, payload: bytes = b"") -> bytes:
    """One frame; ``payload`` is padded with zeros to whole words."""
    if len(payload) % 4:
        payload += bytes(4 - len(payload) % 4)
    body = bytes((command, len(payload) // 4)) + payload
    return HEADER + body + struct.pack("<H", crc16(body)) + TRAILER


@dataclass(frozen=True)
class Frame:
    command: int
    payload: bytes

    def word(self, index: int) -> int:
        return struct.unpack_from("<I", self.payload, 4 * index)[0]

    @property
    def name(self) -> str:
        return NAMES.get(self.command, f"0x{self.command:02x}")


class FrameError(ValueError):
    """Bytes that start like a frame but are not a good one."""


def frame_length(buffer: bytes | bytearray) -> int | None:
    """Length of the frame at the start of ``buffer`` once its header is in, else None."""
    if len(buffer) < 4:
        return None
    return 8 + 4 * buffer[3]


def parse(frame: bytes | bytearray) -> Frame:
    """Check one complete frame (header, length, CRC, trailer) and decode it."""
    if frame[:2] != HEADER:
        raise FrameError(f"frame starts {bytes(frame[:2]).hex(' ')}, not 01 88")
    expected = 8 + 4 * frame[3]
    if len(frame) != expected:
        raise FrameError(f"frame is {len(frame)} bytes, its length byte says {expected}")
    if frame[-2:] != TRAILER:
        raise FrameError(f"frame ends {bytes(frame[-2:]).hex(' ')}, not 99 03")
    body = bytes(frame[2:-4])
    (got,) = struct.unpack_from("<H", frame, len(frame) - 4)
    if crc16(body) != got:
        raise FrameError(f"bad CRC {got:04x} (computed {crc16(body):04x})")
    return Frame(body[0], body[2:])
