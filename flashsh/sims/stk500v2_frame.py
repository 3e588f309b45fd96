"""STK500v2 (AVR068) message framing and constants, shared by the simulated devices.

A message is ``1B SEQ SIZE_HI SIZE_LO 0E BODY... CHECKSUM``; the checksum is the XOR of
every byte before it, so the XOR over a whole good message is 0. The first body byte is
the command ID, and the answer repeats it. Source: AVR068 "Protocol Layer" and the
fact sheet docs/protocols/stk500v2.md part A.

The functions at the bottom build, split and read messages for tests and host-side tools.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

# AVR068 "Protocol Layer": framing bytes.
MESSAGE_START = 0x1B
TOKEN = 0x0E

# AVR068 command IDs: general.
CMD_SIGN_ON = 0x01
CMD_SET_PARAMETER = 0x02
CMD_GET_PARAMETER = 0x03
CMD_SET_DEVICE_PARAMETERS = 0x04
CMD_OSCCAL = 0x05
CMD_LOAD_ADDRESS = 0x06
CMD_FIRMWARE_UPGRADE = 0x07
CMD_CHECK_TARGET_CONNECTION = 0x0D
# ISP (serial programming) commands.
CMD_ENTER_PROGMODE_ISP = 0x10
CMD_LEAVE_PROGMODE_ISP = 0x11
CMD_CHIP_ERASE_ISP = 0x12
CMD_PROGRAM_FLASH_ISP = 0x13
CMD_READ_FLASH_ISP = 0x14
CMD_PROGRAM_EEPROM_ISP = 0x15
CMD_READ_EEPROM_ISP = 0x16
CMD_PROGRAM_FUSE_ISP = 0x17
CMD_READ_FUSE_ISP = 0x18
CMD_PROGRAM_LOCK_ISP = 0x19
CMD_READ_LOCK_ISP = 0x1A
CMD_READ_SIGNATURE_ISP = 0x1B
CMD_READ_OSCCAL_ISP = 0x1C
CMD_SPI_MULTI = 0x1D

# AVR068 status codes (second body byte of most answers).
STATUS_CMD_OK = 0x00
STATUS_CMD_TOUT = 0x80
STATUS_RDY_BSY_TOUT = 0x81
STATUS_SET_PARAM_MISSING = 0x82
STATUS_CMD_FAILED = 0xC0
STATUS_CKSUM_ERROR = 0xC1
STATUS_CMD_UNKNOWN = 0xC9
# Answer ID a programmer uses for a message that arrived with a bad checksum.
ANSWER_CKSUM_ERROR = 0xB0

# AVR068 parameters (CMD_GET_PARAMETER / CMD_SET_PARAMETER), all one byte.
PARAM_BUILD_NUMBER_LOW = 0x80
PARAM_BUILD_NUMBER_HIGH = 0x81
PARAM_HW_VER = 0x90
PARAM_SW_MAJOR = 0x91
PARAM_SW_MINOR = 0x92
PARAM_VTARGET = 0x94
PARAM_VADJUST = 0x95
PARAM_OSC_PSCALE = 0x96
PARAM_OSC_CMATCH = 0x97
PARAM_SCK_DURATION = 0x98
PARAM_TOPCARD_DETECT = 0x9A
PARAM_STATUS = 0x9C
PARAM_DATA = 0x9D
PARAM_RESET_POLARITY = 0x9E
PARAM_CONTROLLER_INIT = 0x9F

#: Bytes around the body: start, sequence, two size bytes, token, checksum.
OVERHEAD = 6


def checksum(data: bytes) -> int:
    """XOR of every byte of ``data``."""
    value = 0
    for byte in data:
        value ^= byte
    return value


def frame(seq: int, body: bytes) -> bytes:
    """The complete message carrying ``body`` with sequence number ``seq``."""
    if not 0 < len(body) <= 0xFFFF:
        raise ValueError(f"a message body holds 1..65535 bytes, not {len(body)}")
    head = bytes([MESSAGE_START, seq & 0xFF, len(body) >> 8, len(body) & 0xFF, TOKEN])
    return head + body + bytes([checksum(head + body)])


@dataclass(frozen=True)
class Message:
    """One message as taken apart by :func:`split`."""

    seq: int
    body: bytes
    checksum_ok: bool

    @property
    def command(self) -> int:
        return self.body[0]

    @property
    def status(self) -> int | None:
        return self.body[1] if len(self.body) > 1 else None


def split(data: bytes) -> tuple[list[Message], bytes]:
    """Cut ``data`` into complete messages; return them and the bytes left over (an
    incomplete message, or noise before the next 0x1B is dropped)."""
    messages: list[Message] = []
    i = 0
    while True:
        start = data.find(MESSAGE_START, i)
        if start < 0:
            return messages, b""
        if len(data) - start < 5:
            return messages, data[start:]
        size = data[start + 2] << 8 | data[start + 3]
        if data[start + 4] != TOKEN:
            i = start + 1
            continue
        end = start + 5 + size + 1
        if len(data) < end:
            return messages, data[start:]
        whole = data[start:end]
        messages.append(Message(whole[1], whole[5:-1], checksum(whole) == 0))
        i = end


class _Port(Protocol):
    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...


def read_message(port: _Port, timeout: float) -> Message | None:
    """Read one message from a pyserial-like ``port`` within ``timeout`` seconds, skipping
    anything before its 0x1B and after a bad token; None when none completes in time."""
    deadline = time.monotonic() + timeout

    def take(size: int) -> bytes | None:
        got = b""
        while len(got) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            port.timeout = left
            got += port.read(size - len(got))
        return got

    while True:
        start = take(1)
        if start is None:
            return None
        if start[0] != MESSAGE_START:
            continue
        head = take(4)
        if head is None:
            return None
        if head[3] != TOKEN:
            continue
        rest = take((head[1] << 8 | head[2]) + 1)
        if rest is None:
            return None
        whole = start + head + rest
        return Message(head[0], rest[:-1], checksum(whole) == 0)
