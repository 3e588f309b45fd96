"""Faults a simulated Katapult or Klipper node can be told to show.

Counts start at 1 when the node is created and run on across resets:

================  =========================================================================
``drop:N``        CAN: the Nth data frame from the host to this node is lost
``dup:N``         CAN: the Nth data frame from the host is delivered twice
``respdrop:N``    the last 8-byte piece of the Nth response is lost
``respdup:N``     the Nth response is sent twice
``crc:N``         the Nth response goes out with its CRC bits inverted
``nack:N``        the Nth command (a valid frame) is answered NACK and not carried out
``busy:N``        likewise, answered BUSY (0xF3)
``silent``        the node sends nothing at all (admin replies included)
``reboot:N``      the node resets right after writing its Nth SEND_BLOCK, before the ACK
``baduuid``       CAN: GET_CANBUS_ID answers another UUID (last byte inverted)
``collide``       CAN: when this node and another answer one query, this node goes
                  bus-off and stays silent until the simulator stops
================  =========================================================================

Responses count everything the Katapult firmware sends (ACK, NACK, COMMAND_ERROR).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashsh.sims.faults import fault_count

COUNTED = ("drop", "dup", "respdrop", "respdup", "crc", "nack", "busy", "reboot")
FLAGS = ("silent", "baduuid", "collide")
CAN_ONLY = ("drop", "dup", "baduuid", "collide")


@dataclass
class NodeFaults:
    """The faults one node shows; empty means a healthy node."""

    counted: dict[str, set[int]] = field(default_factory=lambda: {k: set() for k in COUNTED})
    flags: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, specs: list[str], *, can: bool = True) -> NodeFaults:
        """Build from ``["drop:3", "crc:1,silent"]``. Raises ValueError naming the bad item
        and the valid kinds."""
        faults = cls()
        for item in (part.strip() for spec in specs for part in spec.split(",")):
            if item:
                faults.add(item, can=can)
        return faults

    def add(self, item: str, *, can: bool = True) -> None:
        kind, sep, arg = item.partition(":")
        kind = kind.strip().lower()
        valid = [k for k in (*COUNTED, *FLAGS) if can or k not in CAN_ONLY]
        if kind not in valid:
            shown = ", ".join(f"{k}:N" if k in COUNTED else k for k in valid)
            raise ValueError(f"unknown fault {item!r}; valid: {shown}")
        if kind in FLAGS:
            if sep:
                raise ValueError(f"fault {kind!r} takes no number")
            self.flags.add(kind)
            return
        self.counted[kind].add(fault_count(item, kind, arg))

    def hit(self, kind: str, n: int) -> bool:
        return n in self.counted[kind]

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def __bool__(self) -> bool:
        return bool(self.flags or any(self.counted.values()))
