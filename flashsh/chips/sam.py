"""SAM parts as the SAM-BA monitor sees them, loaded from ``data/sam.toml``.

Family and part tables merge into one ``SamChip``. Look parts up by name
(``sam_part("atsamd21g18a")``) or by what the chip reports: ``sam_by_cidr`` for SAM3/SAM4
(CHIPID), ``sam_by_did`` for SAMD (DSU DID). The masks are bossac's (samba.md §7).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from flashsh.chips import _load
from flashsh.errors import TargetError

#: CHIPID_CIDR without EXT (bit 31) and VERSION (bits 4:0).
CIDR_MASK = 0x7FFFFFE0
#: DSU DID without DIE (bits 15:12) and REVISION (bits 11:8).
DID_MASK = 0xFFFF00FF


@dataclass(frozen=True)
class SamChip:
    key: str
    name: str
    family: str
    family_name: str
    cpu: str
    controller: str  # "eefc", "nvm-d21", "nvm-d51"
    flash_base: int
    flash_size: int
    page_size: int
    erase_size: int
    sram_base: int
    sram_size: int
    applet: int
    stack: int
    bootloader: int
    planes: int = 1
    eefc: tuple[int, ...] = ()
    chipid: int = 0
    rstc_cr: int = 0
    ewp_limit: int | None = None
    gpnvm: tuple[str, ...] = ()
    cidr: int | None = None
    exid: int | None = None
    did: int | None = None

    @property
    def flash_end(self) -> int:
        return self.flash_base + self.flash_size

    @property
    def sram_end(self) -> int:
        return self.sram_base + self.sram_size

    @property
    def is_eefc(self) -> bool:
        return self.controller == "eefc"

    @property
    def plane_size(self) -> int:
        return self.flash_size // self.planes

    def plane_of(self, address: int) -> tuple[int, int]:
        """(plane, page number within the plane) of a flash address: EEFC commands
        take the page number relative to their own plane (samba.md §8.2)."""
        offset = address - self.flash_base
        plane = offset // self.plane_size
        return plane, (offset % self.plane_size) // self.page_size


@cache
def sam_parts() -> dict[str, SamChip]:
    data = _load("sam.toml")
    parts = {}
    for key, raw in data["parts"].items():
        family = dict(data["families"][raw["family"]])
        fields = {**family, **raw}
        fields["family_name"] = family["name"]
        fields["eefc"] = tuple(fields.get("eefc", ()))
        fields["gpnvm"] = tuple(fields.get("gpnvm", ()))
        parts[key] = SamChip(key=key, **fields)
    return parts


def sam_part(name: str) -> SamChip:
    """Look a part up by key or name, case-insensitively; ``sam3x8e`` finds AT91SAM3X8E."""
    wanted = name.strip().lower()
    for key, part in sam_parts().items():
        if wanted in (key, part.name.lower()) or key.endswith(wanted.removeprefix("at")):
            return part
    known = ", ".join(sorted(sam_parts()))
    raise TargetError(f"unknown SAM chip {name!r}", f"known: {known}")


def sam_by_cidr(cidr: int, exid: int) -> SamChip | None:
    """The SAM3/SAM4 part with this CHIPID; EXID decides where CIDRs are shared (SAM4E)."""
    matches = [
        p for p in sam_parts().values() if p.cidr is not None and (p.cidr ^ cidr) & CIDR_MASK == 0
    ]
    exact = [p for p in matches if p.exid is None or p.exid == exid]
    return (exact or [None])[0]


def sam_by_did(did: int) -> SamChip | None:
    for part in sam_parts().values():
        if part.did is not None and (part.did ^ did) & DID_MASK == 0:
            return part
    return None
