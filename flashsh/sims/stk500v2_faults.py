"""Faults of the STK500v2 simulators: the line faults of :mod:`flashsh.sims.faults` plus
faults in whole answer messages.

Counts start at 1 and run on across resets. "Message N" is the Nth complete message the
device accepted (good checksum); its answer is the one affected.

=================  =====================================================================
``drop:N``         as for every simulator: the Nth byte sent never arrives
``corrupt:N``      the Nth byte sent arrives with every bit inverted
``stop:N``         after N bytes the transmit line goes dead for good
``dead``           the device never runs
``badsum:N``       the answer to message N carries a wrong checksum
``badseq:N``       the answer to message N carries the wrong sequence number
``failed:N``       message N is carried out, but answered ``<cmd> C0`` (STATUS_CMD_FAILED)
``silent:N``       message N is carried out and not answered at all
``cksumerr:N``     message N is treated as received with a bad checksum: not carried out,
                   answered ``B0 C1`` (ANSWER_CKSUM_ERROR, STATUS_CKSUM_ERROR) by the ISP
                   programmer and dropped silently by the bootloader, as each does
=================  =====================================================================

``nosync:N`` is an STK500v1 fault and is refused here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashsh.sims.faults import Faults, fault_count
from flashsh.sims.stk500v2_frame import STATUS_CMD_FAILED, frame

MESSAGE_FAULTS = ("badsum", "badseq", "failed", "silent", "cksumerr")
LINE_FAULTS = ("drop", "corrupt", "stop", "dead")


@dataclass
class Stk500v2Faults(Faults):
    """Line faults (handled by the chip's transmitter) plus answer-message faults."""

    badsum: set[int] = field(default_factory=set)
    badseq: set[int] = field(default_factory=set)
    silent: set[int] = field(default_factory=set)
    cksumerr: set[int] = field(default_factory=set)

    def add(self, item: str) -> None:
        kind, _, arg = item.partition(":")
        kind = kind.strip().lower()
        if kind in LINE_FAULTS:
            super().add(item)
            return
        if kind not in MESSAGE_FAULTS:
            raise ValueError(
                f"unknown fault {item!r} for STK500v2; valid: drop:N, corrupt:N, stop:N, "
                "dead, badsum:N, badseq:N, failed:N, silent:N, cksumerr:N"
            )
        getattr(self, kind).add(fault_count(item, kind, arg))

    def __bool__(self) -> bool:
        mine = self.badsum or self.badseq or self.silent or self.cksumerr
        return super().__bool__() or bool(mine)

    def reply_override(self, command: int) -> bytes | None:
        # STK500v1 reply bytes mean nothing here; message faults are applied to frames.
        return None

    def answer(self, n: int, seq: int, body: bytes) -> bytes | None:
        """The bytes that go out as the answer ``body`` to message ``n``; None when the
        answer is not sent at all."""
        if n in self.silent:
            return None
        if n in self.failed:
            body = bytes([body[0], STATUS_CMD_FAILED])
        if n in self.badseq:
            seq += 1
        message = bytearray(frame(seq, body))
        if n in self.badsum:
            message[-1] ^= 0xFF
        return bytes(message)
