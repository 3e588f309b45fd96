"""A simulated STM32 in its ROM bootloader, on the USART (ST AN3155).

``sim://stm32?chip=stm32f103c8`` is a board with BOOT0 high: after reset the ROM
(:mod:`flashsh.sims.stm32_rom`) waits for the host's 0x7F, over memories laid out by the
chip data (:mod:`flashsh.sims.stm32_flash`, ``flashsh/chips/data/stm32.toml``). It runs on
:class:`flashsh.sims.mcu.Mcu` with :class:`flashsh.sims.wire.Wire` lines like the AVR
simulators, with the line in 8E1: 11 bits a byte, and a host port left at 8N1 gets parity
errors (set ``parity = "E"`` on the port as on pyserial).

The DTR and RTS lines are not wired to the chip unless ``autoreset=1`` (boards and
adapters that drive NRST from them); opening the pty does not reset it either, so two
stm32flash runs meet an already synchronised ROM, as on a real board.
"""

from __future__ import annotations

from dataclasses import replace

from flashsh.chips.stm32 import Stm32Chip, stm32_by_pid, stm32_part
from flashsh.errors import FlashshError, TargetError
from flashsh.sims.board import UartBoard, number_option
from flashsh.sims.faults import Faults, fault_count
from flashsh.sims.mcu import EXTRF, PORF, Mcu
from flashsh.sims.stm32_flash import Stm32Memory
from flashsh.sims.stm32_rom import RomFaults, RomTiming, Stm32Rom
from flashsh.sims.wire import FRAMING_8E1, Framing, Wire

# The ROM's start-up after reset is not documented in the fact sheets; a millisecond
# keeps a host's 0x7F sent right after reset from being lost (UNCONFIRMED).
STARTUP_MS = 1.0

LINE_FAULTS = ("drop", "corrupt", "stop", "dead")
ROM_FAULTS = ("nack", "noise")

OPTIONS = {
    "chip": "part name, e.g. stm32f103c8 (default), stm32f401cc, stm32f407vg, stm32g0b1re",
    "baud": "line rate before the host is known (default 115200); the ROM measures the "
    "host's rate from 0x7F",
    "throttle": "1 = real time (default), 0 = no delays, 0.1 = ten times faster",
    "startup_ms": "time from reset to the ROM listening, ms (default 1)",
    "timing": "typical (default) or max: which datasheet erase/program times to use",
    "erase_ms": "time to erase one page or sector, ms (default: chip data)",
    "mass_erase_ms": "time to erase the whole flash, ms (default: chip data)",
    "program_us": "time to program one flash word, us (default: chip data)",
    "image": "file (.hex, .bin at the flash base, .elf) in flash before the start",
    "rdp": "read-out protection level at the start: 0 (default), 1, 2",
    "wrp": "write-protected sectors at the start, comma-separated WRP bit numbers",
    "overwrite": "nack (default): writes over programmed flash are refused; and: ANDed in",
    "autoreset": "1: DTR/RTS edges and opening the pty reset the chip (default 0)",
    "fault": "drop:N, corrupt:N, stop:N, dead (line); nack:N (command N answered NACK), "
    "noise:N (received byte N has a parity error) (repeatable)",
}


def parse_faults(specs: list[str]) -> tuple[Faults, RomFaults]:
    """Split ``fault=`` items into line faults and ROM faults. Raises ValueError."""
    line: list[str] = []
    rom: dict[str, set[int]] = {kind: set() for kind in ROM_FAULTS}
    for item in (part.strip() for spec in specs for part in spec.split(",")):
        kind, _, arg = item.partition(":")
        kind = kind.lower()
        if not item:
            continue
        if kind in LINE_FAULTS:
            line.append(item)
        elif kind in ROM_FAULTS:
            rom[kind].add(fault_count(item, kind, arg))
        else:
            raise ValueError(
                f"unknown fault {item!r} for STM32; valid: drop:N, corrupt:N, stop:N, dead, "
                "nack:N, noise:N"
            )
    return Faults.parse(line), RomFaults(frozenset(rom["nack"]), frozenset(rom["noise"]))


class Stm32Sim(UartBoard):
    """An STM32 board with BOOT0 high: chip memories, the ROM and both UART wires."""

    protocol = "stm32"
    OPTIONS = OPTIONS

    def __init__(
        self,
        *,
        chip: str = "stm32f103c8",
        baud: int = 115200,
        throttle: float = 1.0,
        startup_ms: float = STARTUP_MS,
        timing: RomTiming | None = None,
        image: str | None = None,
        rdp: int = 0,
        wrp: list[int] | None = None,
        overwrite: str = "nack",
        autoreset: bool = False,
        faults: tuple[Faults, RomFaults] | None = None,
        host_baud: int | None = None,
    ) -> None:
        try:
            self.part: Stm32Chip = stm32_part(chip)
        except TargetError as exc:
            raise ValueError(str(exc)) from None
        # One ROM serves a whole product ID and knows only the group's memory map: it
        # takes addresses up to the largest member's flash end (STM32F103C8 dies carry
        # 128 KiB, and stm32flash reads that much). Only the flash-size register tells
        # the part's own size (fact sheet §11). Which limit the ROM checks: UNCONFIRMED.
        group = stm32_by_pid(self.part.pid)
        self.chip = replace(self.part, flash_size=group.flash_size, erase_units=group.erase_units)
        if baud <= 0:
            raise ValueError("option baud must be positive")
        if rdp not in (0, 1, 2):
            raise ValueError(f"option rdp={rdp}: levels are 0, 1 and 2")
        self.autoreset = autoreset
        self.memory = Stm32Memory(
            self.chip, overwrite=overwrite, flash_kib=self.part.flash_size // 1024
        )
        if image:
            self.load_image(image)
        if wrp:
            self.memory.write_protect(wrp)
        if rdp:
            self.memory.set_rdp_level(rdp)
        line_faults, rom_faults = faults or (Faults(), RomFaults())
        host = host_baud or baud
        self.to_target = Wire(
            host, baud, throttle=throttle, tx_framing=FRAMING_8E1, rx_framing=FRAMING_8E1
        )
        self.to_host = Wire(
            baud, host, throttle=throttle, tx_framing=FRAMING_8E1, rx_framing=FRAMING_8E1
        )
        self._synced = False
        self.rom = Stm32Rom(self.chip, self.memory, self, timing=timing, faults=rom_faults)
        self.mcu = Mcu(
            self.rom,
            self.memory,  # type: ignore[arg-type]  # Mcu only keeps it for inspection
            self.to_target,
            self.to_host,
            throttle=throttle,
            faults=line_faults,
            startup_ms=startup_ms,
        )

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> Stm32Sim:
        """Build from URL or command-line options. Raises ValueError for an unknown
        option or a bad value."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for sim://stm32; valid: {', '.join(OPTIONS)}"
            )
        one = {name: values[-1] for name, values in options.items()}
        kwargs: dict = {"host_baud": host_baud}
        for name in ("chip", "image", "overwrite"):
            if name in one:
                kwargs[name] = one[name] if name == "image" else one[name].lower()
        for name in ("throttle", "startup_ms"):
            if name in one:
                kwargs[name] = number_option(name, one[name])
        for name in ("baud", "rdp"):
            if name in one:
                kwargs[name] = int(number_option(name, one[name]))
        if "autoreset" in one:
            kwargs["autoreset"] = one["autoreset"].lower() in ("1", "yes", "true", "on")
        if "wrp" in one:
            try:
                kwargs["wrp"] = [int(s, 0) for s in one["wrp"].split(",") if s.strip()]
            except ValueError:
                raise ValueError(f"option wrp={one['wrp']!r}: sector numbers, like 0,1") from None
        timing = one.get("timing", "typical").lower()
        if timing not in ("typical", "max"):
            raise ValueError(f"option timing={timing!r}: typical or max")
        times = {
            n: number_option(n, one[n])
            for n in ("erase_ms", "mass_erase_ms", "program_us")
            if n in one
        }
        kwargs["timing"] = RomTiming(use_max=timing == "max", **times)
        if "fault" in options:
            kwargs["faults"] = parse_faults(options["fault"])
        return cls(**kwargs)

    # ------------------------------------------------------------------ the line (Link)

    def listen_for_sync(self) -> None:
        """After reset the auto-baud measures whatever rate the host sends at."""
        with self.to_target.cond:
            self._synced = False
            self.to_target.rx_baud = self.to_target.tx_baud

    def lock_baud(self) -> int:
        """The 0x7F was measured: the USART stays at the host's rate until reset."""
        with self.to_target.cond:
            self._synced = True
            baud = self.to_target.tx_baud
            self.to_target.rx_baud = baud
        with self.to_host.cond:
            self.to_host.tx_baud = baud
        return baud

    def host_baud(self) -> int:
        return self.to_target.tx_baud

    def set_host_baud(self, baud: int) -> None:
        """The host changed its port's rate: after the sync that garbles the line."""
        with self.to_target.cond:
            self.to_target.tx_baud = baud
            if not self._synced:
                self.to_target.rx_baud = baud
        with self.to_host.cond:
            self.to_host.rx_baud = baud

    def set_host_format(self, bytesize: int, parity: str, stopbits: float) -> None:
        """The host's character format (a SimPort's ``parity`` and so on)."""
        framing = Framing(bytesize, parity, stopbits)
        self.to_target.set_tx_framing(framing)
        with self.to_host.cond:
            self.to_host.rx_framing = framing

    # ------------------------------------------------------------------ running

    def reset(self) -> None:
        """A DTR/RTS assert edge or a client opening the pty: resets the chip only on
        boards that wire those lines to NRST (``autoreset=1``)."""
        if self.autoreset:
            self.mcu.external_reset(EXTRF)

    @property
    def resets_on_open(self) -> bool:
        """Whether a client opening the pty resets the chip (``autoreset=1``)."""
        return self.autoreset

    def press_reset(self) -> None:
        """The reset button: BOOT0 is high, so the ROM starts again and wants 0x7F."""
        self.mcu.external_reset(EXTRF)

    def power_cycle(self) -> None:
        self.mcu.external_reset(PORF)

    def load_image(self, path: str) -> None:
        """Program ``path`` into flash as if done earlier. Raises ValueError."""
        from flashsh.images.load import load_image

        try:
            image = load_image(path, default_address=self.chip.flash_base)
        except FlashshError as exc:
            raise ValueError(str(exc)) from None
        self.memory.load([(s.address, s.data) for s in image.segments])

    # ------------------------------------------------------------------ inspection

    @property
    def flash(self) -> bytes:
        return bytes(self.memory.flash)

    @property
    def eeprom(self) -> bytes:
        """STM32s have no EEPROM here; empty, for ``--dump-eeprom``."""
        return b""

    @property
    def state(self) -> str:
        return self.mcu.state

    @property
    def synced(self) -> bool:
        """The ROM has measured the baud rate since its last reset."""
        return self._synced

    def describe(self) -> str:
        chip = self.part
        version = chip.protocol_version
        return (
            f"{chip.name} (PID 0x{chip.pid:03X}) ROM bootloader v{version >> 4}.{version & 15}, "
            f"{chip.flash_size // 1024} KiB flash at 0x{chip.flash_base:08X} "
            f"({self.chip.flash_size // 1024} KiB reachable), "
            f"RDP level {self.memory.rdp_level}"
        )
