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
}


def sim_class(name: str) -> type:
    """Import the simulator for ``name``. Raises ValueError listing the known ones."""
    try:
        spec = SIMS[name.lower()]
    except KeyError:
        raise ValueError(f"no simulator for protocol {name!r}; valid: {', '.join(SIMS)}") from None
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)
