"""``sim://`` URLs: ``sim://PROTOCOL?option=value&...``.

For example ``sim://stk500v1?chip=atmega328p&bootloader=optiboot&version=8.3&baud=115200
&throttle=1&page_ms=8.2&image=blink.hex&fault=drop:200``. Each simulator validates its
own options and rejects unknown ones, so a typo fails instead of being ignored.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from flashsh.sims import sim_class
from flashsh.sims.port import SimPort

SCHEME = "sim"


def parse_sim_url(url: str) -> tuple[str, dict[str, list[str]]]:
    """Split a sim URL into (protocol, options). Raises ValueError if it is not one."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME or not parts.netloc:
        raise ValueError(f"not a simulator URL: {url!r} (expected sim://PROTOCOL?options)")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"unexpected {parts.path or '#' + parts.fragment!r} in {url!r}")
    try:
        options = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"malformed options in {url!r} (use name=value&name=value)") from None
    return parts.netloc.lower(), {name.lower(): values for name, values in options.items()}


def open_sim_port(url: str, baudrate: int) -> SimPort:
    """Start the simulator ``url`` describes and return a port connected to it, opened
    at ``baudrate`` (the host's rate; the simulated bootloader keeps its own)."""
    protocol, options = parse_sim_url(url)
    sim = sim_class(protocol).from_options(options, host_baud=baudrate)
    return SimPort(sim, baudrate, name=url)
