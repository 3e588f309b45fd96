"""Shared pieces of the bootloader-drive tests: simulated drives and application images."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flashsh.protocols import ProbeOptions
from flashsh.session import Session
from flashsh.sims.uf2_drive import SimDrive


def arm_app(app_start: int, size: int, seed: int = 1) -> bytes:
    """An application image: a vector table linked at ``app_start``, then noise."""
    rng = random.Random(seed)
    body = bytes(rng.randrange(256) for _ in range(size - 8))
    return struct.pack("<II", 0x20004F00, app_start + 0x1C1) + body


@contextmanager
def drive(board: str, tmp_path: Path, **options: object) -> Iterator[SimDrive]:
    """A simulated drive on an image file, unplugged afterwards."""
    sim = SimDrive(board, image_path=str(tmp_path / f"{board}.img"), **options)  # type: ignore[arg-type]
    try:
        yield sim
    finally:
        sim.unplug()


def open_session(sim: SimDrive, chip: str | None = None) -> Session:
    return Session.open(f"msc:{sim.path}", ProbeOptions(chip=chip))
