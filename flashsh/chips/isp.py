"""ISP programming parameters per AVR part, loaded from ``data/avr_isp.toml``.

An STK500v2 programmer needs these to drive the target's SPI programming interface: the
timing of Programming Enable, how to write and poll pages, and the 4-byte instructions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from flashsh import chips
from flashsh.errors import TargetError


@dataclass(frozen=True)
class EnterProgmode:
    """CMD_ENTER_PROGMODE_ISP parameters (AVR068 §5.2.1); delays in ms."""

    timeout: int
    stab_delay: int
    cmdexe_delay: int
    synch_loops: int
    byte_delay: int
    poll_value: int
    poll_index: int
    command: bytes


@dataclass(frozen=True)
class PagedMemory:
    """How flash or EEPROM pages are written and read (AVR068 §5.2.4-5.2.7)."""

    mode: int
    delay_ms: int
    load_page: int
    write_page: int
    read: int
    poll: bytes
    read_block: int
    load_extended_address: bool = False


@dataclass(frozen=True)
class FuseAccess:
    """A fuse or lock byte: read and write instructions, and which value bits go out."""

    read: bytes
    write: bytes
    write_mask: int
    write_set: int

    def write_instruction(self, value: int) -> bytes:
        """The 4-byte write instruction carrying ``value``'s meaningful bits."""
        return self.write[:3] + bytes([(value & self.write_mask) | self.write_set])


@dataclass(frozen=True)
class IspPart:
    key: str
    enter_progmode: EnterProgmode
    leave_pre_delay: int
    leave_post_delay: int
    chip_erase_ms: int
    chip_erase_poll_method: int
    chip_erase_command: bytes
    flash: PagedMemory
    eeprom: PagedMemory
    fuses: dict[str, FuseAccess]
    lock: FuseAccess
    signature_read: bytes
    calibration_read: bytes
    fuse_write_ms: int

    def signature_instruction(self, index: int) -> bytes:
        return self.signature_read[:2] + bytes([index]) + self.signature_read[3:]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _paged(raw: dict[str, Any]) -> PagedMemory:
    fields = dict(raw)
    fields["poll"] = bytes(fields["poll"])
    return PagedMemory(**fields)


def _fuse(raw: dict[str, Any]) -> FuseAccess:
    return FuseAccess(bytes(raw["read"]), bytes(raw["write"]), raw["write_mask"], raw["write_set"])


def _build(key: str, raw: dict[str, Any]) -> IspPart:
    enter = dict(raw["enter_progmode"])
    enter["command"] = bytes(enter["command"])
    return IspPart(
        key=key,
        enter_progmode=EnterProgmode(**enter),
        leave_pre_delay=raw["leave_progmode"]["pre_delay"],
        leave_post_delay=raw["leave_progmode"]["post_delay"],
        chip_erase_ms=raw["chip_erase"]["delay_ms"],
        chip_erase_poll_method=raw["chip_erase"]["poll_method"],
        chip_erase_command=bytes(raw["chip_erase"]["command"]),
        flash=_paged(raw["flash"]),
        eeprom=_paged(raw["eeprom"]),
        fuses={name: _fuse(value) for name, value in raw["fuses"].items()},
        lock=_fuse(raw["lock"]),
        signature_read=bytes(raw["signature"]["read"]),
        calibration_read=bytes(raw["calibration"]["read"]),
        fuse_write_ms=raw["fuse_write"]["delay_ms"],
    )


@cache
def isp_parts() -> dict[str, IspPart]:
    data = chips._load("avr_isp.toml")
    defaults = data["defaults"]
    return {key: _build(key, _merge(defaults, raw)) for key, raw in data["parts"].items()}


@cache
def isp_defaults() -> IspPart:
    """The shared values, for talking to a target before its signature is known."""
    return _build("defaults", chips._load("avr_isp.toml")["defaults"])


def isp_part(key: str) -> IspPart:
    """ISP parameters for an avr.toml part key; TargetError if flashsh has none."""
    try:
        return isp_parts()[key]
    except KeyError:
        known = ", ".join(sorted(isp_parts()))
        raise TargetError(f"no ISP programming data for {key}", f"known: {known}") from None
