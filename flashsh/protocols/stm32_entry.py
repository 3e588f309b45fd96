"""Putting an STM32 into its ROM bootloader (and back) with the port's RTS and DTR lines.

Two ways to write ``--entry``:

* The wiring, and flashsh works out the sequence: ``boot0=rts,reset=dtr``. A line named
  alone is wired straight to the pin: asserting it drives the pin low, as a USB-serial
  adapter's RTS/DTR outputs do. ``!`` marks an inverting stage (a transistor) between:
  ``boot0=!rts`` means BOOT0 is high while RTS is asserted.
  Entry: BOOT0 high, RESET low, 100 ms, RESET high, 100 ms. Exit (``reset``): BOOT0 low,
  RESET low, 100 ms, RESET high; with no BOOT0 line (a jumper) the exit is a Go instead.

* Steps, as stm32flash's ``-i`` takes them: ``rts``/``dtr`` assert a line, ``-rts``/
  ``-dtr`` release it, ``,`` waits 100 ms before the next step, ``&`` does not; ``:``
  separates the entry steps from the exit steps. ``-rts&dtr,-dtr:rts&dtr,-dtr`` is the
  same wiring as above written out.

Facts: fact sheet §2.3 (stm32flash ``-i``, the polarity trap, stm32loader's defaults).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flashsh.errors import FlashshError, TransportError
from flashsh.transports.base import ByteLink

#: stm32flash's pause for each ``,``.
STEP_PAUSE = 0.1
#: After the last step: the ROM starts within a few ms of RESET going high.
SETTLE = 0.1
LINES = ("rts", "dtr")


@dataclass(frozen=True)
class Step:
    line: str  # "rts" or "dtr"
    asserted: bool
    pause: float  # seconds to wait after this step


@dataclass(frozen=True)
class EntrySequence:
    text: str
    entry: tuple[Step, ...]
    exit: tuple[Step, ...]

    def run_entry(self, link: ByteLink) -> None:
        _run(link, self.entry, self.text)
        time.sleep(SETTLE)

    def run_exit(self, link: ByteLink) -> bool:
        """Run the exit steps; False when there are none."""
        if not self.exit:
            return False
        _run(link, self.exit, self.text)
        return True


def _run(link: ByteLink, steps: tuple[Step, ...], text: str) -> None:
    for step in steps:
        if not link.set_lines(**{step.line: step.asserted}):
            raise TransportError(
                f"--entry {text!r} needs the RTS and DTR lines, but {link.description} has "
                "none (a pty or a network port)",
                "set BOOT0 by hand and press reset, then connect without --entry",
            )
        if step.pause:
            time.sleep(step.pause)


def parse_entry(text: str) -> EntrySequence:
    """Parse either form (see the module text). Raises FlashshError naming the bad part."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned:
        raise FlashshError("--entry is empty", "e.g. --entry boot0=rts,reset=dtr")
    if "=" in cleaned:
        return _from_wiring(text, cleaned)
    entry_text, _, exit_text = cleaned.partition(":")
    return EntrySequence(text, _steps(text, entry_text), _steps(text, exit_text))


def _steps(text: str, part: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    token = ""
    for char in part + "&":
        if char not in ",&":
            token += char
            continue
        if token:
            line = token.lstrip("-")
            if line not in LINES or token.count("-") > 1:
                raise FlashshError(
                    f"--entry {text!r}: {token!r} is not a step",
                    "steps are rts, -rts, dtr, -dtr, joined by , (100 ms) or & (no pause)",
                )
            steps.append(Step(line, not token.startswith("-"), 0.0))
        elif char == "," and not steps:
            raise FlashshError(f"--entry {text!r}: a pause before the first step")
        if char == "," and steps:
            last = steps[-1]
            steps[-1] = Step(last.line, last.asserted, last.pause + STEP_PAUSE)
        token = ""
    return tuple(steps)


def _from_wiring(text: str, cleaned: str) -> EntrySequence:
    pins: dict[str, tuple[str, bool]] = {}
    for item in cleaned.split(","):
        pin, _, line = item.partition("=")
        inverted = line.startswith("!")
        line = line.lstrip("!")
        if pin not in ("boot0", "reset") or line not in LINES or pin in pins:
            raise FlashshError(
                f"--entry {text!r}: {item!r} is not a wiring",
                "write boot0=rts,reset=dtr (! before the line for an inverting stage)",
            )
        pins[pin] = (line, inverted)
    if "reset" not in pins:
        raise FlashshError(f"--entry {text!r} names no reset line", "add e.g. reset=dtr")

    def level(pin: str, high: bool, pause: float) -> Step:
        line, inverted = pins[pin]
        # Straight wiring: an asserted line drives the pin low.
        return Step(line, high == inverted, pause)

    boot0 = "boot0" in pins
    entry = [level("boot0", True, 0.0)] if boot0 else []
    entry += [level("reset", False, STEP_PAUSE), level("reset", True, STEP_PAUSE)]
    # Without a BOOT0 line a reset would only bring the ROM back: leaving is Go's job.
    leave = []
    if boot0:
        leave = [level("boot0", False, 0.0), level("reset", False, STEP_PAUSE)]
        leave.append(level("reset", True, 0.0))
    return EntrySequence(text, tuple(entry), tuple(leave))
