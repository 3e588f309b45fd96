"""Fixtures for the simulator tests.

``sim_port(query, baud)`` opens ``sim://stk500v1?...`` with the fast defaults of
sim_helpers.FAST (no throttle, no start-up delay, no LED blinking) unless the query
overrides them, and closes the port at teardown. Opening resets the board, as on an
Arduino; unless ``settle`` is False the fixture waits until that reset has started the
bootloader.
"""

from __future__ import annotations

import pytest
from sim_helpers import sim_url

from flashsh.sims.port import SimPort
from flashsh.sims.url import open_sim_port


@pytest.fixture
def sim_port():
    ports: list[SimPort] = []

    def open_port(query: str = "", baud: int = 115200, *, settle: bool = True) -> SimPort:
        port = open_sim_port(sim_url(query), baud)
        ports.append(port)
        port.timeout = 0.5
        if settle:
            assert port.sim.mcu.wait_for_state("bootloader"), port.sim.mcu.events
        return port

    yield open_port
    for port in ports:
        port.close()
