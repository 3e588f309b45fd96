"""Byte-level helpers for talking to a simulated STK500v1 bootloader in tests."""

from __future__ import annotations

from flashsh.sims.port import SimPort

#: Options that make a simulator answer at once: no throttle, no start-up delay, no LED.
FAST = {"throttle": "0", "startup_ms": "0", "flashes": "0"}


def sim_url(query: str = "") -> str:
    """``sim://stk500v1?query`` plus the FAST options the query does not set."""
    items = [item for item in query.split("&") if item]
    given = {item.partition("=")[0] for item in items}
    items += [f"{k}={v}" for k, v in FAST.items() if k not in given]
    return "sim://stk500v1?" + "&".join(items)


def read_for(port: SimPort, size: int, timeout: float) -> bytes:
    saved = port.timeout
    port.timeout = timeout
    try:
        return port.read(size)
    finally:
        port.timeout = saved


def talk(port: SimPort, request: str, expected: str, *, silence: float = 0.1) -> str:
    """Send hex ``request`` and return the reply as spaced hex: the bytes ``expected``
    announces (waiting up to a second for them) plus anything else that follows within
    10 ms. With ``expected`` empty, whatever comes within ``silence`` seconds."""
    want = len(bytes.fromhex(expected))
    port.write(bytes.fromhex(request))
    got = read_for(port, want, 1.0) if want else b""
    got += read_for(port, 4096, 0.01 if want else silence)
    return got.hex(" ")


def exchange(port: SimPort, request: str, expected: str, **kw: float) -> None:
    """Send ``request`` and assert the reply is exactly ``expected`` (spaced hex)."""
    got = talk(port, request, expected, **kw)
    assert got == expected, f"{request[:40]} -> {got[:60]!r}, expected {expected[:60]!r}"


def load(word: int) -> str:
    """LOAD_ADDRESS for a word address."""
    return f"55 {word & 0xFF:02x} {word >> 8 & 0xFF:02x} 20"


def prog_page(data: bytes, memtype: str = "F", length: int | None = None) -> str:
    """PROG_PAGE with ``data``; ``length`` overrides the length field."""
    n = len(data) if length is None else length
    return f"64 {n >> 8 & 0xFF:02x} {n & 0xFF:02x} {ord(memtype):02x} {data.hex(' ')} 20"


def read_page(length: int, memtype: str = "F") -> str:
    return f"74 {length >> 8 & 0xFF:02x} {length & 0xFF:02x} {ord(memtype):02x} 20"


def reply(data: bytes) -> str:
    """INSYNC, data, OK as spaced hex."""
    return (b"\x14" + data + b"\x10").hex(" ")
