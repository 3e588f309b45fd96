"""STK500 protocol version 2 (Atmel AVR068): the message layer.

Every message, both ways: MESSAGE_START, SEQUENCE_NUMBER, MESSAGE_SIZE (big-endian),
TOKEN, MESSAGE_BODY, CHECKSUM (XOR of all bytes before it). The device echoes the
sequence number. This module frames bodies, checks answers, and recovers from a garbled
or lost answer by discarding input and sending again, a bounded number of times.
Facts and sources: /work/shared/protocols/stk500v2.md part A.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import reduce
from operator import xor

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.transports.base import ByteLink

# AVR068 §4 message format.
MESSAGE_START = 0x1B
TOKEN = 0x0E
HEADER_SIZE = 5

# AVR068 command IDs (§5, command.h).
CMD_SIGN_ON = 0x01
CMD_SET_PARAMETER = 0x02
CMD_GET_PARAMETER = 0x03
CMD_OSCCAL = 0x05
CMD_LOAD_ADDRESS = 0x06
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

# AVR068 status codes (§6).
STATUS_CMD_OK = 0x00
STATUS_CMD_TOUT = 0x80
STATUS_RDY_BSY_TOUT = 0x81
STATUS_SET_PARAM_MISSING = 0x82
STATUS_CMD_FAILED = 0xC0
STATUS_CKSUM_ERROR = 0xC1
STATUS_CMD_UNKNOWN = 0xC9
STATUS_CMD_ILLEGAL_PARAMETER = 0xCA
ANSWER_CKSUM_ERROR = 0xB0

# AVR068 parameters (§7).
PARAM_BUILD_NUMBER_LOW = 0x80
PARAM_BUILD_NUMBER_HIGH = 0x81
PARAM_HW_VER = 0x90
PARAM_SW_MAJOR = 0x91
PARAM_SW_MINOR = 0x92
PARAM_VTARGET = 0x94
PARAM_SCK_DURATION = 0x98
PARAM_RESET_POLARITY = 0x9E

COMMAND_NAMES = {
    value: name
    for name, value in globals().copy().items()
    if name.startswith("CMD_") and isinstance(value, int)
}

STATUS_TEXT = {
    STATUS_CMD_TOUT: "timed out",
    STATUS_RDY_BSY_TOUT: "timed out waiting for the chip (RDY/BSY)",
    STATUS_SET_PARAM_MISSING: "was refused: device parameters not set",
    STATUS_CMD_FAILED: "failed",
    STATUS_CKSUM_ERROR: "was refused: checksum error",
    STATUS_CMD_UNKNOWN: "is not supported by this device",
    STATUS_CMD_ILLEGAL_PARAMETER: "was refused: illegal parameter",
}

#: Largest body sent: avrdude's transmit buffer, which one 256-byte page plus its
#: 10-byte header fits; the Arduino bootloader's receive buffer holds 285 bytes.
MAX_BODY = 275
#: Largest answer body believed: a 256-byte read answers 259 bytes. Anything claiming more
#: is line noise that happens to start with 0x1B.
MAX_ANSWER = 300
#: Bytes per READ command: the answer (n + 3 bytes) must fit the Arduino bootloader's
#: 285-byte buffer, and avrdude reads 256 at a time from programmers too.
READ_BLOCK = 256
RETRIES = 3
DEFAULT_TIMEOUT = 1.0

#: Three of these in a row make older Arduino Mega 2560 bootloaders start their text
#: monitor, wherever they occur in the stream (stk500v2.md B2).
MONITOR_TRIGGER = b"!!!"
MONITOR_SIGNS = (b"Bootloader>", b"Arduino explorer", b"!!!!!!!!!!")


class MessageError(ProtocolError):
    """An answer came garbled, late or not at all; sending again may help."""


class NotStk500v2Error(ProtocolError):
    """The other end answers, but not with STK500v2 messages."""


class MonitorError(ProtocolError):
    """The Mega 2560 bootloader is in its "!!!" text monitor instead of the protocol."""


class CommandFailed(ProtocolError):
    """The device understood the command and answered with a failure status."""

    def __init__(
        self, message: str, hint: str | None = None, *, command: int = 0, status: int = 0
    ) -> None:
        super().__init__(message, hint)
        self.command = command
        self.status = status


def checksum(data: bytes) -> int:
    """XOR of all bytes; a whole message including its checksum XORs to 0."""
    return reduce(xor, data, 0)


def frame(sequence: int, body: bytes) -> bytes:
    """Wrap ``body`` in one AVR068 message."""
    head = bytes([MESSAGE_START, sequence & 0xFF, len(body) >> 8, len(body) & 0xFF, TOKEN])
    message = head + body
    return message + bytes([checksum(message)])


def command_name(command: int) -> str:
    return COMMAND_NAMES.get(command, f"command 0x{command:02x}")


def load_address(value: int, *, extended: bool = False) -> bytes:
    """CMD_LOAD_ADDRESS body. Flash takes word addresses, EEPROM byte addresses; bit 31
    tells an ISP programmer to send Load Extended Address first (flash past 64 K words)."""
    if extended:
        value |= 0x80000000
    return bytes([CMD_LOAD_ADDRESS]) + value.to_bytes(4, "big")


def read_data(answer: bytes, size: int) -> bytes:
    """The data of a READ_FLASH/EEPROM answer, ``id 00 data… 00``."""
    if len(answer) != size + 3:
        raise ProtocolError(
            f"read answer has {len(answer) - 3} data bytes, expected {size}",
            "a byte was lost on the line; try again",
        )
    return answer[2:-1]


class MessageLink:
    """Sends AVR068 bodies over a ByteLink and returns the checked answer bodies.

    ``avoid_monitor`` makes sure three 0x21 bytes never go out in a row, counting the
    header and checksum, by choosing the sequence number; bodies must not contain them.
    """

    def __init__(self, link: ByteLink, *, retries: int = RETRIES) -> None:
        self.link = link
        self.retries = retries
        self.avoid_monitor = False
        #: True once any good answer arrived: later junk is line noise, not another protocol.
        self.synced = False
        self._sequence = 1

    @property
    def sequence(self) -> int:
        """The sequence number the next message will carry."""
        return self._sequence

    def command(self, body: bytes, timeout: float = DEFAULT_TIMEOUT, **kw: int) -> bytes:
        """Send one command; return its answer body (ID and status checked)."""
        return self.transact([body], timeout, **kw)[0]

    def transact(
        self, bodies: Sequence[bytes], timeout: float = DEFAULT_TIMEOUT, *, retries: int = -1
    ) -> list[bytes]:
        """Send ``bodies`` one after another and return their answers.

        If an answer is garbled or lost, discard input and start the whole group over (so
        LOAD_ADDRESS goes out again before the command that depends on it). Raises
        NoAnswerError or MessageError after the retries, CommandFailed at once when the
        device reports a failure, NotStk500v2Error when it never spoke the protocol.
        """
        tries = 1 + (self.retries if retries < 0 else retries)
        for attempt in range(tries):
            try:
                answers = [self._exchange(body, timeout) for body in bodies]
            except (MessageError, NoAnswerError) as exc:
                if attempt == tries - 1:
                    if tries == 1:
                        raise
                    raise type(exc)(f"{exc.message} ({tries} tries)", exc.hint) from exc
                self.resync()
            else:
                self.synced = True
                return answers
        raise AssertionError("unreachable")

    def parameter(self, param: int) -> int | None:
        """CMD_GET_PARAMETER; None when the device does not know the parameter."""
        try:
            answer = self.command(bytes([CMD_GET_PARAMETER, param]))
        except CommandFailed:
            return None
        return answer[2] if len(answer) > 2 else None

    def resync(self) -> None:
        """Throw away whatever is on its way and restart the sequence at 1.

        Bootloaders built without the "issue 505" fix accept only sequence 1 or the one
        after their last answer; 1 is right for every device after a lost message.
        """
        self.link.drain(quiet=0.03, limit=0.5)
        self.link.discard_input()
        self._sequence = 1

    # ------------------------------------------------------------------ one exchange

    def _exchange(self, body: bytes, timeout: float) -> bytes:
        if not body or len(body) > MAX_BODY:
            raise ProtocolError(f"{len(body)}-byte STK500v2 message is too long or empty")
        message = self._frame(body)
        sequence = message[1]
        self.link.write(message)
        answer = self._receive(sequence, body[0], timeout, message)
        self._sequence = (sequence + 1) & 0xFF
        return self._check(body[0], answer)

    def _frame(self, body: bytes) -> bytes:
        for step in range(3):
            message = frame(self._sequence + step, body)
            if not self.avoid_monitor or MONITOR_TRIGGER not in message:
                return message
        raise ProtocolError(
            f"{command_name(body[0])} would send three 0x21 bytes in a row",
            "this bootloader would start its monitor; the data must be split",
        )

    def _check(self, command: int, answer: bytes) -> bytes:
        name = command_name(command)
        if answer[0] == ANSWER_CKSUM_ERROR:
            raise MessageError(f"the device got {name} with a bad checksum")
        if answer[0] != command:
            raise MessageError(f"answer to {name} was for {command_name(answer[0])}")
        if len(answer) < 2:
            raise NotStk500v2Error(
                f"{self.link.description} answers {name} with only {answer.hex(' ')}",
                "it does not speak STK500v2; try another --protocol",
            )
        status = answer[1]
        if status != STATUS_CMD_OK:
            text = STATUS_TEXT.get(status, f"ended with status 0x{status:02x}")
            raise CommandFailed(f"{name} {text}", command=command, status=status)
        return answer

    def _receive(self, sequence: int, command: int, timeout: float, sent: bytes) -> bytes:
        """Collect bytes until a well-formed answer with ``sequence`` arrives.

        Bytes before a MESSAGE_START are skipped; an answer with an older sequence number
        (one that came too late) is dropped; a bad checksum ends the wait at once.
        """
        deadline = time.monotonic() + timeout
        buffer = bytearray()
        junk = bytearray()
        stale = None
        while True:
            want = HEADER_SIZE
            while buffer:
                start = buffer.find(MESSAGE_START)
                if start != 0:
                    junk += buffer if start < 0 else buffer[:start]
                    del buffer[: len(buffer) if start < 0 else start]
                    continue
                if len(buffer) < HEADER_SIZE:
                    break
                size = (buffer[2] << 8) | buffer[3]
                if buffer[4] != TOKEN or not 0 < size <= MAX_ANSWER:
                    junk.append(buffer.pop(0))  # a 0x1B in noise, not a message start
                    continue
                want = HEADER_SIZE + size + 1
                if len(buffer) < want:
                    break
                message = bytes(buffer[:want])
                del buffer[:want]
                if message == sent:
                    raise NotStk500v2Error(
                        f"{self.link.description} echoes what is sent",
                        "that is a loopback, not a programmer or bootloader",
                    )
                if checksum(message) != 0:
                    raise MessageError(f"answer to {command_name(command)} has a bad checksum")
                if message[1] != sequence:
                    stale = message[1]
                    continue
                return message[HEADER_SIZE:-1]
            left = deadline - time.monotonic()
            chunk = self.link.read(max(want - len(buffer), 1), left) if left > 0 else b""
            if chunk:
                buffer += chunk
                continue
            raise self._silence(command, sequence, bytes(junk), stale)

    def _silence(self, command: int, sequence: int, junk: bytes, stale: int | None) -> Exception:
        name = command_name(command)
        if any(sign in junk for sign in MONITOR_SIGNS):
            return MonitorError(
                "the bootloader is in its '!!!' text monitor, not in STK500v2",
                "reset the board (or send Q) and connect again",
            )
        if stale is not None:
            return MessageError(
                f"answer to {name} carried sequence number {stale}, expected {sequence}"
            )
        if junk and not self.synced:
            return NotStk500v2Error(
                f"{self.link.description} answers, but not STK500v2 (it sent {junk[:16].hex(' ')})",
                "check --baud, or choose the right --protocol",
            )
        if junk:
            return MessageError(f"answer to {name} was lost in line noise")
        return NoAnswerError(
            f"no answer to {name}",
            "the target may have left the bootloader or lost power; `connect` again",
        )
