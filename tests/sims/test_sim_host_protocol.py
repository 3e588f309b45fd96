"""flashsh's own STK500v1 driver runs unchanged against the simulator."""

from __future__ import annotations

import pytest
from sim_helpers import sim_url

from flashsh.protocols.stk500v1 import Stk500v1
from flashsh.transports.serial import open_serial


@pytest.mark.parametrize(
    ("query", "baud", "address", "chip", "bootloader"),
    [
        ("", 115200, 0x100, "ATmega328P", "optiboot 8.3"),
        ("bootloader=atmegaboot", 57600, 0x100, "ATmega328P", "ATmegaBOOT"),
        ("chip=atmega2560", 115200, 0x20000, "ATmega2560", "optiboot 8.3"),
    ],
)
def test_probe_write_and_read_back(query, baud, address, chip, bootloader):
    link = open_serial(sim_url(query), baud)
    try:
        proto = Stk500v1.probe(link, reset=True)
        assert proto is not None
        info = proto.identify()
        assert info.chip == chip and info.bootloader.startswith(bootloader)
        flash = proto.memory_map().regions[0]
        data = bytes((i * 13) & 0xFF for i in range(flash.page_size))
        proto.write_page(flash, address, data)
        assert proto.read(flash, address, len(data)) == data
        assert link.port.sim.flash[address : address + len(data)] == data
    finally:
        link.close()
