"""A fake ISP programmer holding fuse bytes, and an in-process shell driver."""

from __future__ import annotations

from flashsh.chips import avr_part
from flashsh.chips.fuses import fuse_part
from flashsh.protocols.base import Bootloader, Capability, MemoryMap, Region, TargetInfo

SPIEN = 0x20


class FakeIsp(Bootloader):
    """Fuse and lock bytes that behave as the chip's do over ISP: unused bits read 1,
    SPIEN cannot be changed, lock bits are only ever programmed (chip erase clears them).

    ``stuck`` names bytes whose writes do not take, for the read-back check.
    """

    name = "fakeisp"

    def __init__(
        self,
        chip: str = "atmega328p",
        fuses: dict[str, int] | None = None,
        lock: int = 0xFF,
        *,
        fuse_access: bool = True,
        stuck: tuple[str, ...] = (),
    ) -> None:
        super().__init__(link=None)  # type: ignore[arg-type]
        self.part = avr_part(chip)
        self.layout = fuse_part(chip)
        self.capabilities = Capability.READ | (Capability.FUSES if fuse_access else Capability(0))
        start = {n: b.factory for n, b in self.layout.fuses.items()} | (fuses or {})
        self.fuses = {n: self._stored(n, v) for n, v in start.items()}
        self.lock = (lock | 0xC0) & 0xFF
        self.stuck = stuck
        self.writes: list[tuple[str, int]] = []
        self.reads = 0

    def _stored(self, name: str, value: int) -> int:
        return (value | ~self.layout.byte(name).mask) & 0xFF

    @classmethod
    def probe(cls, link, *, reset, chip=None):  # noqa: ANN001, ANN206 - never probed
        return None

    def identify(self) -> TargetInfo:
        return TargetInfo("fakeisp", "fake ISP programmer", self.part.name, "fake")

    def memory_map(self) -> MemoryMap:
        page = self.part.flash_page
        return MemoryMap((Region("flash", 0, self.part.flash_size, page, page),))

    def read(self, region: Region, address: int, length: int) -> bytes:
        return b"\xff" * length

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        raise AssertionError("fuse commands never write flash")

    def read_fuses(self) -> dict[str, int]:
        self.reads += 1
        if Capability.FUSES not in self.capabilities:
            return super().read_fuses()
        return dict(self.fuses)

    def write_fuse(self, name: str, value: int) -> None:
        self.writes.append((name, value))
        if name in self.stuck:
            return
        if name == "hfuse":  # SPIEN is not reachable in serial programming mode
            value = (value & ~SPIEN) | (self.fuses["hfuse"] & SPIEN)
        self.fuses[name] = self._stored(name, value)

    def read_lock(self) -> int:
        return self.lock

    def write_lock(self, value: int) -> None:
        self.writes.append(("lock", value))
        self.lock &= value | 0xC0

    def start_application(self) -> None:
        pass

    def close(self) -> None:
        pass
