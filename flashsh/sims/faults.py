"""Faults a simulated board can be told to show, so tests can check how a host copes.

Counts start at 1 when the simulator is created and run on across resets:

=================  =====================================================================
``drop:N``         the Nth byte the target sends never reaches the host
``corrupt:N``      the Nth byte the target sends arrives with every bit inverted
``stop:N``         after N bytes the target's transmit line goes dead for good
``nosync:N``       command N (Nth command byte the firmware's main loop reads) is carried
                   out, but its whole reply is replaced by 0x15 (Resp_STK_NOSYNC)
``failed:N``       likewise, reply replaced by 0x14 0x11 (INSYNC, Resp_STK_FAILED)
``dead``           the chip never runs: no reply to anything (wrong port, no power)
=================  =====================================================================

In a URL, faults are comma-separated or given as several ``fault=`` options:
``fault=drop:200,nosync:7``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Resp_STK_INSYNC = 0x14
Resp_STK_FAILED = 0x11
Resp_STK_NOSYNC = 0x15

FAULT_KINDS = ("drop", "corrupt", "stop", "nosync", "failed", "dead")


def fault_count(item: str, kind: str, arg: str, *, least: int = 1) -> int:
    """The N of a ``kind:N`` fault. Raises ValueError naming the item."""
    try:
        n = int(arg, 0)
    except ValueError:
        raise ValueError(f"fault {item!r} needs a number, like {kind}:3") from None
    if n < least:
        raise ValueError(f"fault {item!r}: counts start at {least}")
    return n


@dataclass
class Faults:
    """The faults one simulator shows; empty means a healthy board."""

    drop: set[int] = field(default_factory=set)
    corrupt: set[int] = field(default_factory=set)
    stop_after: int | None = None
    nosync: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    dead: bool = False

    @classmethod
    def parse(cls, specs: list[str] | str) -> Faults:
        """Build from ``["drop:200", "nosync:3"]`` or ``"drop:200,nosync:3"``. Raises
        ValueError naming the bad item and the valid kinds."""
        if isinstance(specs, str):
            specs = [specs]
        faults = cls()
        for item in (part.strip() for spec in specs for part in spec.split(",")):
            if item:
                faults.add(item)
        return faults

    def add(self, item: str) -> None:
        kind, _, arg = item.partition(":")
        kind = kind.strip().lower()
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault {item!r}; valid: drop:N, corrupt:N, stop:N, nosync:N, "
                "failed:N, dead"
            )
        if kind == "dead":
            if arg:
                raise ValueError("fault 'dead' takes no number")
            self.dead = True
            return
        n = fault_count(item, kind, arg, least=0 if kind == "stop" else 1)
        if kind == "stop":
            self.stop_after = n if self.stop_after is None else min(self.stop_after, n)
        else:
            getattr(self, kind).add(n)

    def __bool__(self) -> bool:
        return bool(
            self.drop
            or self.corrupt
            or self.stop_after is not None
            or self.nosync
            or self.failed
            or self.dead
        )

    def tx_byte(self, n: int, value: int) -> int | None:
        """What becomes of the Nth byte the target sends: the value on the wire, or None
        when it never gets there."""
        if n in self.drop or (self.stop_after is not None and n > self.stop_after):
            return None
        if n in self.corrupt:
            return value ^ 0xFF
        return value

    def reply_override(self, command: int) -> bytes | None:
        """The bytes that replace the reply to the Nth command, if a fault says so."""
        if command in self.nosync:
            return bytes([Resp_STK_NOSYNC])
        if command in self.failed:
            return bytes([Resp_STK_INSYNC, Resp_STK_FAILED])
        return None
