"""The address space a SAM-BA monitor reads and writes: SRAM, ROM, flash behind its
controller, and peripheral registers, each access with its width (8, 16 or 32 bits).

An address nothing answers at raises :class:`BusFault`. On the chip that is a HardFault
inside the monitor, which then never answers again (samba-testing.md §2: "a read of an
unmapped address faults the monitor"); the monitor model goes silent the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class BusFault(Exception):
    """An access the chip answers with a bus error (HardFault in the monitor)."""


class Device(Protocol):
    def read(self, address: int, size: int) -> int: ...
    def write(self, address: int, size: int, value: int) -> None: ...


@dataclass
class Mapping:
    start: int
    end: int  # exclusive
    device: Device
    name: str


class Bus:
    """Devices by address range; later mappings hide earlier ones where they overlap
    (the boot alias at 0 is added last)."""

    def __init__(self) -> None:
        self.maps: list[Mapping] = []

    def map(self, start: int, size: int, device: Device, name: str) -> None:
        self.maps.insert(0, Mapping(start, start + size, device, name))

    def find(self, address: int) -> Mapping:
        for mapping in self.maps:
            if mapping.start <= address < mapping.end:
                return mapping
        raise BusFault(f"nothing at 0x{address:08X}")

    def read(self, address: int, size: int) -> int:
        address &= 0xFFFFFFFF
        if address % size:
            # Cortex-M0+ faults on any unaligned access; M3/M4 allow some, but no
            # monitor command needs them.
            raise BusFault(f"unaligned {8 * size}-bit read at 0x{address:08X}")
        return self.find(address).device.read(address, size)

    def write(self, address: int, size: int, value: int) -> None:
        address &= 0xFFFFFFFF
        if address % size:
            raise BusFault(f"unaligned {8 * size}-bit write at 0x{address:08X}")
        self.find(address).device.write(address, size, value & ((1 << (8 * size)) - 1))

    def read_block(self, address: int, length: int) -> bytes:
        """``length`` bytes as the monitor's byte loops read them (``R``, ``Z``)."""
        return bytes(self.read(address + i, 1) for i in range(length))

    def write_block(self, address: int, data: bytes) -> None:
        """Bytes stored one by one (``S`` payload: memcpy into SRAM)."""
        for i, value in enumerate(data):
            self.write(address + i, 1, value)


class Ram:
    """Plain memory: SRAM, or a ROM when ``writable`` is False (writes are ignored, as
    on the bus matrix: the ROM does not answer writes with an error)."""

    def __init__(self, base: int, size_or_data: int | bytes, *, writable: bool = True) -> None:
        self.base = base
        if isinstance(size_or_data, int):
            self.data = bytearray(size_or_data)
        else:
            self.data = bytearray(size_or_data)
        self.writable = writable

    def read(self, address: int, size: int) -> int:
        at = address - self.base
        return int.from_bytes(self.data[at : at + size], "little")

    def write(self, address: int, size: int, value: int) -> None:
        if self.writable:
            at = address - self.base
            self.data[at : at + size] = value.to_bytes(size, "little")


class Window:
    """Another device seen at a second address: the boot memory at 0, which shows the
    ROM or a flash plane depending on GPNVM bits. ``target()`` says where, now."""

    def __init__(self, target: Callable[[], tuple[Device, int]]) -> None:
        self.target = target

    def read(self, address: int, size: int) -> int:
        device, base = self.target()
        return device.read(base + address, size)

    def write(self, address: int, size: int, value: int) -> None:
        device, base = self.target()
        device.write(base + address, size, value)


class Registers:
    """A peripheral's register block as bytes. Reads call ``on_read(offset, size)`` first
    (volatile bits); writes go to ``on_write(offset, size, value)`` when given, else into
    the bytes. Offsets outside the block read 0 and ignore writes (reserved)."""

    def __init__(
        self,
        base: int,
        size: int,
        *,
        on_read: Callable[[int, int], int | None] | None = None,
        on_write: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.base = base
        self.bytes = bytearray(size)
        self.on_read = on_read
        self.on_write = on_write

    def get(self, offset: int, size: int = 4) -> int:
        return int.from_bytes(self.bytes[offset : offset + size], "little")

    def set(self, offset: int, value: int, size: int = 4) -> None:
        self.bytes[offset : offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(
            size, "little"
        )

    def read(self, address: int, size: int) -> int:
        offset = address - self.base
        if self.on_read is not None:
            value = self.on_read(offset, size)
            if value is not None:
                return value
        return self.get(offset, size)

    def write(self, address: int, size: int, value: int) -> None:
        offset = address - self.base
        if self.on_write is not None:
            self.on_write(offset, size, value)
        else:
            self.set(offset, value, size)


def merge(old: int, offset: int, size: int, value: int, reg: int, reg_size: int) -> int:
    """The register at ``reg`` (``reg_size`` bytes) after a ``size``-byte write of
    ``value`` at ``offset``: only the bytes the write covers change."""
    old_bytes = bytearray(old.to_bytes(reg_size, "little"))
    new = value.to_bytes(size, "little")
    for i in range(size):
        at = offset + i - reg
        if 0 <= at < reg_size:
            old_bytes[at] = new[i]
    return int.from_bytes(old_bytes, "little")


def covers(offset: int, size: int, reg: int, reg_size: int) -> bool:
    """Whether a ``size``-byte access at ``offset`` touches the register at ``reg``."""
    return offset < reg + reg_size and reg < offset + size


def words(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 4}I", data[: len(data) // 4 * 4]))


@dataclass
class Event:
    """Something the simulated chip did, for tests and ``-v`` logs."""

    t: float
    what: str


class Context:
    """Time and the event log a chip's peripherals share. ``throttle`` scales every
    busy time (1 = datasheet times, 0 = instant), as in flashsh.sims.wire."""

    def __init__(self, throttle: float, clock: Callable[[], float]) -> None:
        self.throttle = throttle
        self.clock = clock
        self.start = clock()
        self.events: list[Event] = []

    def now(self) -> float:
        return self.clock()

    def later(self, seconds: float) -> float:
        """The time ``seconds`` of chip time from now, throttle applied."""
        return self.clock() + seconds * self.throttle

    def log(self, what: str) -> None:
        self.events.append(Event(self.clock() - self.start, what))
