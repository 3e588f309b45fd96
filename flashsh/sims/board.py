"""What every simulated serial board shares: a chip runtime between two UART wires, and
the parsing of numeric sim:// options."""

from __future__ import annotations

from typing import Self

from flashsh.sims.mcu import Mcu
from flashsh.sims.wire import Wire


def option_values(sim: str, options: dict[str, list[str]], known: dict[str, str]) -> dict[str, str]:
    """The last value of each sim:// option; ValueError names an unknown one and the
    valid names, so a typo fails instead of being ignored."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for sim://{sim}; valid: {', '.join(known)}"
        )
    return {name: values[-1] for name, values in options.items()}


def number_option(name: str, text: str) -> float:
    """A non-negative number from a sim:// option; ValueError names the option."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"option {name}={text!r} needs a number") from None
    if value < 0:
        raise ValueError(f"option {name}={text!r} must not be negative")
    return value


class UartBoard:
    """A board whose firmware runs in ``mcu`` and talks over ``to_target``/``to_host``."""

    mcu: Mcu
    to_target: Wire
    to_host: Wire

    def start(self) -> Self:
        self.mcu.start()
        return self

    def stop(self) -> None:
        self.mcu.stop()
        self.to_target.close()
        self.to_host.close()

    def set_host_baud(self, baud: int) -> None:
        """The host changed its port's rate: bytes sent from now on are judged by it."""
        with self.to_target.cond:
            self.to_target.tx_baud = baud
        with self.to_host.cond:
            self.to_host.rx_baud = baud
