"""Built-in simulators of bootloaders, reachable as ``sim://PROTOCOL?options`` targets.

A simulator models a board (chip memory, firmware, serial line timing) closely enough
that real host code, flashsh's or avrdude's, runs against it. ``SIMS`` lists them as
``"module:Class"`` strings, imported only when used, so another protocol's simulator
joins by adding a line here.
"""

from __future__ import annotations

import importlib

#: Protocol name in ``sim://NAME`` -> simulator class.
SIMS: dict[str, str] = {
    "stk500v1": "flashsh.sims.stk500v1:Stk500v1Sim",
    "stk500v2": "flashsh.sims.stk500v2:Stk500v2Sim",
    "stm32": "flashsh.sims.stm32:Stm32Sim",
    "katapult": "flashsh.sims.katapult:KatapultBoard",
    "klipper": "flashsh.sims.katapult:KlipperBoard",
    "samba": "flashsh.sims.samba:SambaBoard",
    "dfuse": "flashsh.sims.dfuse:DfuSeRom",
    "dfu": "flashsh.sims.dfu_generic:GenericDfu",
    "maple": "flashsh.sims.maple:MapleDfu",
    "hid": "flashsh.sims.hid_bootloader:HidBootloaderSim",
    "halfkay": "flashsh.sims.halfkay:HalfKaySim",
    "klipper-usb": "flashsh.sims.usb_app:KlipperUsbApp",
}

#: Simulators that are USB devices (served by flashsh.sims.usb_bus), not serial ports.
USB_SIMS = frozenset({"dfuse", "dfu", "maple", "hid", "halfkay", "klipper-usb"})


def sim_class(name: str) -> type:
    """Import the simulator for ``name``. Raises ValueError listing the known ones."""
    try:
        spec = SIMS[name.lower()]
    except KeyError:
        raise ValueError(f"no simulator for protocol {name!r}; valid: {', '.join(SIMS)}") from None
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)
