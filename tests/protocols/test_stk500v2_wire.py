"""The STK500v2 message layer against crafted byte streams.

A scripted link answers each message the host writes with whatever bytes a test chooses:
a good answer, one with a bad checksum or an old sequence number, line noise, nothing.
Frames and checksums are compared with the sample exchanges of the fact sheet.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from inboxlink import InboxLink

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.protocols.stk500v2_wire import (
    ANSWER_CKSUM_ERROR,
    CMD_CHIP_ERASE_ISP,
    CMD_GET_PARAMETER,
    CMD_READ_FLASH_ISP,
    CMD_SIGN_ON,
    CommandFailed,
    MessageError,
    MessageLink,
    MonitorError,
    NotStk500v2Error,
    checksum,
    frame,
    load_address,
)

SIGN_ON_ANSWER = bytes([CMD_SIGN_ON, 0x00, 8]) + b"AVRISP_2"


class ScriptedLink(InboxLink):
    """Collects what the host writes into messages and queues ``respond(seq, body)``'s
    bytes as the answer. Reads never wait: an empty read is a timeout."""

    description = "scripted"

    def __init__(self, respond: Callable[[int, bytes], bytes]) -> None:
        self.respond = respond
        self.sent: list[tuple[int, bytes]] = []
        self.raw = bytearray()
        super().__init__()
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self.raw += data
        self._pending += data
        while len(self._pending) >= 5:
            size = (self._pending[2] << 8) | self._pending[3]
            if len(self._pending) < size + 6:
                break
            message = bytes(self._pending[: size + 6])
            del self._pending[: size + 6]
            assert checksum(message) == 0, "the host sent a bad checksum"
            self.sent.append((message[1], message[5:-1]))
            self.inbox += self.respond(message[1], message[5:-1])


def echo_device(answer_for: Callable[[bytes], bytes] | None = None):
    """A well-behaved device: answers each body with ``answer_for(body)`` or ``<id> 00``."""

    def respond(seq: int, body: bytes) -> bytes:
        answer = answer_for(body) if answer_for else bytes([body[0], 0])
        return frame(seq, answer)

    return respond


def scripted(*replies: Callable[[int, bytes], bytes]):
    """Answer the Nth message with the Nth reply function, then behave well."""
    queue = list(replies)

    def respond(seq: int, body: bytes) -> bytes:
        if queue:
            return queue.pop(0)(seq, body)
        return frame(seq, SIGN_ON_ANSWER if body[0] == CMD_SIGN_ON else bytes([body[0], 0]))

    return respond


def test_frames_match_the_fact_sheet_samples():
    assert frame(1, bytes([CMD_SIGN_ON])) == bytes.fromhex("1B 01 00 01 0E 01 14")
    enter = bytes.fromhex("10 C8 64 19 20 00 53 03 AC 53 00 00")
    assert frame(2, enter) == bytes.fromhex("1B 02 00 0C 0E") + enter + b"\x31"
    assert frame(6, load_address(0, extended=True)) == bytes.fromhex(
        "1B 06 00 05 0E 06 80 00 00 00 90"
    )
    assert frame(7, load_address(0x40)) == bytes.fromhex("1B 07 00 05 0E 06 00 00 00 40 51")


def test_answer_body_is_returned_and_the_sequence_advances_and_wraps():
    link = ScriptedLink(echo_device(lambda body: SIGN_ON_ANSWER))
    wire = MessageLink(link)
    assert wire.command(bytes([CMD_SIGN_ON])) == SIGN_ON_ANSWER
    assert wire.sequence == 2
    wire._sequence = 0xFF
    wire.command(bytes([CMD_SIGN_ON]))
    wire.command(bytes([CMD_SIGN_ON]))
    assert [seq for seq, _ in link.sent] == [1, 0xFF, 0x00]


def test_bad_checksum_is_retried_with_a_new_sequence_number():
    def bad_checksum(seq: int, body: bytes) -> bytes:
        message = bytearray(frame(seq, SIGN_ON_ANSWER))
        message[-1] ^= 0x5A
        return bytes(message)

    link = ScriptedLink(scripted(bad_checksum))
    wire = MessageLink(link)
    wire._sequence = 7
    assert wire.command(bytes([CMD_SIGN_ON])) == SIGN_ON_ANSWER
    # Resent after discarding, with sequence 1: every bootloader build accepts that.
    assert [seq for seq, _ in link.sent] == [7, 1]
    assert wire.sequence == 2


def test_an_old_answer_is_dropped_and_the_right_one_taken():
    def stale_then_right(seq: int, body: bytes) -> bytes:
        return frame(seq - 1, bytes([body[0], 0, 0x11])) + frame(seq, bytes([body[0], 0, 0x22]))

    link = ScriptedLink(scripted(stale_then_right))
    wire = MessageLink(link)
    wire._sequence = 5
    assert wire.command(bytes([CMD_GET_PARAMETER, 0x90])) == bytes([CMD_GET_PARAMETER, 0, 0x22])
    assert len(link.sent) == 1  # no resend needed


def test_wrong_sequence_every_time_fails_after_the_retries():
    link = ScriptedLink(lambda seq, body: frame(seq + 3, bytes([body[0], 0])))
    wire = MessageLink(link, retries=2)
    with pytest.raises(MessageError, match="sequence number 4, expected 1"):
        wire.command(bytes([CMD_GET_PARAMETER, 0x90]))
    assert len(link.sent) == 3


def test_garbage_before_a_frame_is_skipped():
    noise = bytes([0x00, 0xFF, 0x1B, 0x42, 0x1B, 0x01, 0x7F, 0x99, 0x55])  # false starts too
    link = ScriptedLink(lambda seq, body: noise + frame(seq, SIGN_ON_ANSWER))
    wire = MessageLink(link)
    assert wire.command(bytes([CMD_SIGN_ON])) == SIGN_ON_ANSWER
    assert len(link.sent) == 1


def test_lost_answer_is_retried():
    link = ScriptedLink(scripted(lambda seq, body: b"", lambda seq, body: b""))
    wire = MessageLink(link)
    assert wire.command(bytes([CMD_SIGN_ON])) == SIGN_ON_ANSWER
    assert len(link.sent) == 3


def test_no_answer_at_all_names_the_command():
    link = ScriptedLink(lambda seq, body: b"")
    wire = MessageLink(link, retries=3)
    with pytest.raises(NoAnswerError, match="no answer to CMD_READ_FLASH_ISP"):
        wire.command(bytes([CMD_READ_FLASH_ISP, 1, 0, 0x20]))
    assert len(link.sent) == 4


def test_a_group_is_resent_whole_when_its_second_answer_is_lost():
    reads = []

    def device(seq: int, body: bytes) -> bytes:
        if body[0] == CMD_READ_FLASH_ISP:
            reads.append(seq)
            if len(reads) == 1:
                return b""  # the first read's answer is lost
            return frame(seq, bytes([body[0], 0, 0xAB, 0xCD, 0]))
        return frame(seq, bytes([body[0], 0]))

    link = ScriptedLink(device)
    wire = MessageLink(link)
    answers = wire.transact([load_address(0x100), bytes([CMD_READ_FLASH_ISP, 0, 2, 0x20])])
    assert answers[1] == bytes([CMD_READ_FLASH_ISP, 0, 0xAB, 0xCD, 0])
    # LOAD_ADDRESS went out again before the read it belongs to.
    assert [body[0] for _, body in link.sent] == [0x06, 0x14, 0x06, 0x14]


def test_device_side_checksum_error_is_retried():
    link = ScriptedLink(scripted(lambda seq, body: frame(seq, bytes([ANSWER_CKSUM_ERROR, 0xC1]))))
    wire = MessageLink(link)
    assert wire.command(bytes([CMD_SIGN_ON])) == SIGN_ON_ANSWER
    assert len(link.sent) == 2


def test_failure_status_is_reported_once_without_retry():
    link = ScriptedLink(lambda seq, body: frame(seq, bytes([body[0], 0xC0])))
    wire = MessageLink(link)
    with pytest.raises(CommandFailed, match="^CMD_CHIP_ERASE_ISP failed$") as err:
        wire.command(bytes([CMD_CHIP_ERASE_ISP, 9, 0, 0xAC, 0x80, 0, 0]))
    assert err.value.status == 0xC0
    assert len(link.sent) == 1


def test_another_protocol_is_named_in_one_line():
    # optiboot's INSYNC OK, as if an STK500v1 bootloader answered.
    link = ScriptedLink(lambda seq, body: bytes([0x14, 0x10]))
    wire = MessageLink(link)
    with pytest.raises(NotStk500v2Error) as err:
        wire.command(bytes([CMD_SIGN_ON]))
    text = str(err.value)
    assert "answers, but not STK500v2 (it sent 14 10" in text and "\n" not in text
    assert len(link.sent) == 1  # not retried: it is not going to learn the protocol


def test_noise_after_a_good_exchange_is_a_line_error_not_another_protocol():
    good = lambda seq, body: frame(seq, SIGN_ON_ANSWER)  # noqa: E731
    link = ScriptedLink(scripted(good, lambda seq, body: b"\x55"))
    wire = MessageLink(link)
    wire.command(bytes([CMD_SIGN_ON]))
    assert wire.command(bytes([CMD_SIGN_ON])) == SIGN_ON_ANSWER  # retried and answered


def test_an_echo_is_not_taken_for_an_answer():
    link = ScriptedLink(lambda seq, body: frame(seq, body))
    with pytest.raises(NotStk500v2Error, match="echoes what is sent"):
        MessageLink(link).command(bytes([CMD_SIGN_ON]))


def test_the_monitor_is_recognised():
    banner = b"!" * 25 + b"\r\nArduino explorer stk500V2 by MLS\r\nBootloader>"
    link = ScriptedLink(lambda seq, body: banner)
    with pytest.raises(MonitorError, match="'!!!' text monitor"):
        MessageLink(link).command(bytes([CMD_SIGN_ON]))


def test_three_exclamation_marks_never_go_out():
    link = ScriptedLink(echo_device())
    wire = MessageLink(link)
    wire.avoid_monitor = True
    body = bytes([0x15, 0x00, 0x02, 0xC1, 0x0A, 0xC1, 0xC2, 0xA0, 0xFF, 0xFF]) + b"!!"
    # Pick the sequence number whose checksum would make the third 0x21 in a row.
    bad = next(s for s in range(256) if frame(s, body)[-1] == 0x21)
    wire._sequence = bad
    wire.command(body)
    assert b"!!!" not in link.raw
    assert link.sent[0][0] == (bad + 1) & 0xFF
    with pytest.raises(ProtocolError, match="three 0x21 bytes in a row"):
        wire.command(body[:-2] + b"!!!")
