"""A port or node where an application answers instead of a bootloader.

Connecting still succeeds, so that ``bootloader`` can ask the application to reboot into
its bootloader; every memory command refuses with ``ready``'s advice instead of failing
halfway.
"""

from __future__ import annotations

from abc import abstractmethod

from flashsh.protocols.base import Bootloader, MemoryMap, Region


class RunningApplication(Bootloader):
    def memory_map(self) -> MemoryMap:
        return MemoryMap(())

    @abstractmethod
    def ready(self) -> None:
        """Raise UnsupportedError naming the application and how to reach the bootloader."""

    def read(self, region: Region, address: int, length: int) -> bytes:
        self.ready()
        return b""

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        self.ready()

    def start_application(self) -> None:
        return None  # it is running
