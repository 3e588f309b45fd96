"""Faults a simulated DfuSe ROM can show, counted over its DFU class requests (the
first DNLOAD, UPLOAD, GETSTATUS, CLRSTATUS, GETSTATE or ABORT is request 1; descriptor
and alternate-setting requests are not counted):

=============  ===========================================================================
``stall:N``    request N is stalled and the ROM goes to dfuERROR/errSTALLEDPKT
``timeout:N``  request N is never answered (the host's transfer times out); nothing changes
``vanish:N``   the device leaves the bus at request N (a cable pulled, a brown-out) and
               does not come back
=============  ===========================================================================

In a URL: ``fault=stall:40`` or ``fault=stall:40,vanish:90``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashsh.sims.faults import fault_count

KINDS = ("stall", "timeout", "vanish")


@dataclass
class DfuFaults:
    at: dict[int, str] = field(default_factory=dict)
    seen: int = 0

    @classmethod
    def parse(cls, specs: list[str]) -> DfuFaults:
        """From ``["stall:3", "vanish:9"]`` or comma-joined items. Raises ValueError
        naming the bad item and the valid kinds."""
        faults = cls()
        for item in (part.strip() for spec in specs for part in spec.split(",")):
            if not item:
                continue
            kind, _, arg = item.partition(":")
            kind = kind.lower()
            if kind not in KINDS:
                raise ValueError(f"unknown fault {item!r} for sim://dfuse; valid: stall:N, "
                                 "timeout:N, vanish:N")  # fmt: skip
            faults.at[fault_count(item, kind, arg)] = kind
        return faults

    def next_request(self) -> str | None:
        """Count one DFU request; the fault it meets, if any."""
        self.seen += 1
        return self.at.get(self.seen)
