"""Fixtures for tests against real bootloader firmware running in simavr.

``avr_sim(name, **options)`` starts the simulator for one of the bootloaders
in tests/harness/firmware.py and returns an AvrSim: ``.pty`` is the serial
port to open, ``.stop()`` ends the simulation and returns the flash contents.
Tests skip (with the reason) when gcc, libsimavr-dev, gcc-avr/avr-libc or
arduino-core-avr are missing; .ci/run installs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/harness is a package next to this directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.avrsim import AvrSim  # noqa: E402
from harness.build import HarnessUnavailable, build_avr_pty  # noqa: E402
from harness.firmware import Bootloader, get_bootloader  # noqa: E402


@pytest.fixture(scope="session")
def avr_pty_binary() -> Path:
    try:
        return build_avr_pty()
    except HarnessUnavailable as exc:
        pytest.skip(f"simulator harness unavailable: {exc}")


@pytest.fixture(scope="session")
def bootloader():
    """bootloader(name) -> Bootloader, building it on first use (skips if impossible)."""

    def get(name: str) -> Bootloader:
        try:
            return get_bootloader(name)
        except HarnessUnavailable as exc:
            pytest.skip(f"bootloader {name} unavailable: {exc}")

    return get


@pytest.fixture
def avr_sim(avr_pty_binary, bootloader, tmp_path):
    """avr_sim(name="optiboot328", **AvrSim options) -> started AvrSim; stopped at teardown."""
    sims: list[AvrSim] = []

    def start(name: str = "optiboot328", **options) -> AvrSim:
        sim = AvrSim(
            bootloader(name), tmp_path / f"sim{len(sims)}", binary=avr_pty_binary, **options
        )
        sims.append(sim)
        return sim.start()

    yield start
    for sim in sims:
        sim.__exit__(None, None, None)
