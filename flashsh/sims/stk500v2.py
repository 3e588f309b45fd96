"""Simulated STK500v2 devices: the Mega 2560 wiring bootloader and an ISP programmer.

``sim://stk500v2?mode=bootloader&chip=atmega2560`` (the defaults) is an Arduino Mega 2560
running stk500boot_v2 (:mod:`flashsh.sims.stk500v2_boot`); opening the port resets it, as
the DTR line does on the board. ``sim://stk500v2?mode=isp&chip=atmega328p`` is an STK500
with v2 firmware (:mod:`flashsh.sims.stk500v2_isp`) with that chip on its ISP cable
(:mod:`flashsh.sims.avr_target`), fresh from the factory unless ``fuses=``/``lock=``
say otherwise; DTR does nothing there.

Both run on :class:`flashsh.sims.mcu.Mcu` with :class:`flashsh.sims.wire.Wire` lines,
like ``sim://stk500v1``, and take the same ``throttle``, ``page_ms``, ``image`` and
``fault`` options.
"""

from __future__ import annotations

from flashsh import chips
from flashsh.chips import AvrPart
from flashsh.errors import FlashshError, TargetError
from flashsh.sims.avr_target import PART_FUSES, AvrTarget
from flashsh.sims.board import UartBoard, number_option
from flashsh.sims.mcu import EXTRF, PORF, Mcu
from flashsh.sims.memory import EEPROM_WRITE_MS, PAGE_ERASE_MS, PAGE_WRITE_MS
from flashsh.sims.stk500v2_boot import (
    BOOT_SIZE,
    BOOT_WAIT,
    GETCH_TIMEOUT,
    LockedMemory,
    Timing,
    WiringBootloader,
)
from flashsh.sims.stk500v2_faults import Stk500v2Faults
from flashsh.sims.stk500v2_isp import SIGN_ON, IspProgrammer
from flashsh.sims.wire import Wire

MODES = ("bootloader", "isp")
# The Arduino Mega 2560 as shipped: fuses and lock bits its bootloader is burnt with
# (docs/protocols/avr-parts.md section 6; lock written as 0x0F reads 0xCF).
MEGA2560_FUSES = (0xFF, 0xD8, 0xFD)
MEGA2560_LOCK = 0xCF
# The Mega's fuses select the 65 ms crystal start-up (CKSEL 1111, SUT 11).
BOARD_STARTUP_MS = 65.0

COMMON_OPTIONS = {
    "mode": "bootloader (default): Mega 2560 wiring bootloader; isp: STK500v2 ISP "
    "programmer with the chip on its cable",
    "chip": "part name (default atmega2560; bootloader mode models the 2560 build only)",
    "baud": "the device's baud rate (default 115200)",
    "throttle": "1 = real time (default), 0 = no delays, 0.1 = ten times faster",
    "page_ms": "flash page time in ms: SPM erase + write (bootloader, default 8.2) or the "
    "target's ISP page write (isp, default 4.5)",
    "startup_ms": "start-up delay after reset in ms (default 65 bootloader, 0 isp)",
    "fuses": "lfuse:hfuse:efuse in hex (default: Mega 2560 board values in bootloader "
    "mode, factory values in isp mode)",
    "lock": "lock byte in hex (default 0xCF bootloader, 0xFF isp)",
    "image": "file (.hex, .bin, .elf) programmed into flash before the start",
    "fault": "drop:N, corrupt:N, stop:N, dead, badsum:N, badseq:N, failed:N, silent:N, "
    "cksumerr:N (repeatable)",
}
BOOTLOADER_OPTIONS = {
    "build": "current (default) or old: the early builds' bugs (monitor on '!!!' "
    "anywhere, sequence check, no watchdog check, chip erase answers OK)",
    "timeout_ms": "wait for the first byte after reset, ms (default 783), not throttled",
    "getch_ms": "wait for each further byte, ms (default 5000), not throttled",
    "eeprom_ms": "EEPROM byte write time in ms (default 3.3)",
}
ISP_OPTIONS = {
    "programmer": "stk500 (default, signs on STK500_2) or avrisp (AVRISP_2, half SCK)",
    "sck": "initial PARAM_SCK_DURATION (default 2: 115.2 kHz on an STK500)",
    "vtarget": "target supply in volts (default 5.0)",
    "xtal": "crystal on the target board in Hz, 0 = none (default 16000000)",
    "cal": "the target's calibration byte in hex (default 0x9C)",
}
#: Every option name -> help (the URL and -o options of ``python -m flashsh.sims``).
OPTIONS = {**COMMON_OPTIONS, **BOOTLOADER_OPTIONS, **ISP_OPTIONS}


def _hex_byte(name: str, text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise ValueError(f"option {name}={text!r} needs a hex byte, like 0xff") from None
    if not 0 <= value <= 0xFF:
        raise ValueError(f"option {name}={text!r} is not a byte")
    return value


def parse_fuses(text: str) -> tuple[int, int, int]:
    """``"ff:de:fd"`` -> (0xFF, 0xDE, 0xFD). Raises ValueError."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"option fuses={text!r}: expected lfuse:hfuse:efuse, like 62:d9:ff")
    low, high, ext = (_hex_byte("fuses", p) for p in parts)
    return low, high, ext


class Stk500v2Sim(UartBoard):
    """A board or programmer speaking STK500v2: memory, firmware and both UART wires."""

    protocol = "stk500v2"

    def __init__(
        self,
        *,
        mode: str = "bootloader",
        chip: str = "atmega2560",
        baud: int = 115200,
        throttle: float = 1.0,
        page_ms: float | None = None,
        startup_ms: float | None = None,
        fuses: tuple[int, int, int] | None = None,
        lock: int | None = None,
        image: str | None = None,
        faults: Stk500v2Faults | None = None,
        host_baud: int | None = None,
        build: str = "current",
        timeout_ms: float = BOOT_WAIT * 1000,
        getch_ms: float = GETCH_TIMEOUT * 1000,
        eeprom_ms: float = EEPROM_WRITE_MS,
        programmer: str = "stk500",
        sck: int = 2,
        vtarget: float = 5.0,
        xtal: float = 16e6,
        cal: int = 0x9C,
    ) -> None:
        mode = mode.lower()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        try:
            self.part: AvrPart = chips.avr_part(chip)
        except TargetError as exc:
            raise ValueError(str(exc)) from None
        if build not in ("current", "old"):
            raise ValueError(f"unknown build {build!r}; valid: current, old")
        if baud <= 0:
            raise ValueError("option baud must be positive")
        self.mode = mode
        self.baud = baud
        self.faults = faults or Stk500v2Faults()
        self.target: AvrTarget | None = None
        self.firmware: WiringBootloader | IspProgrammer
        if mode == "bootloader":
            if self.part.key != "atmega2560":
                raise ValueError(
                    "the stk500v2 bootloader is modelled as the Mega 2560 build: chip=atmega2560"
                )
            page = (page_ms if page_ms is not None else PAGE_ERASE_MS + PAGE_WRITE_MS) / 1000
            low, high, ext = fuses or MEGA2560_FUSES
            mask = PART_FUSES[self.part.key].efuse_mask
            self.memory = LockedMemory(
                self.part,
                BOOT_SIZE,
                (MEGA2560_LOCK if lock is None else lock) | 0xC0,
                boot_label=b"stk500boot_v2 ",
            )
            self.firmware = WiringBootloader(
                self.part,
                self.memory,
                (low, high, (ext | ~mask) & 0xFF),
                self.faults,
                timing=Timing(page / 2, page / 2, eeprom_ms / 1000),
                old=build == "old",
                boot_wait=timeout_ms / 1000,
                getch_timeout=getch_ms / 1000,
            )
            startup = BOARD_STARTUP_MS if startup_ms is None else startup_ms
        else:
            if programmer not in SIGN_ON:
                raise ValueError(f"unknown programmer {programmer!r}; valid: {', '.join(SIGN_ON)}")
            if not 0 <= sck <= 0xFF:
                raise ValueError("option sck is a byte (PARAM_SCK_DURATION)")
            self.target = AvrTarget(
                self.part,
                fuses=fuses,
                lock=lock,
                calibration=cal,
                xtal_hz=xtal,
                flash_write_ms=page_ms,
                log=self._log,
            )
            self.memory = self.target.memory
            self.firmware = IspProgrammer(
                self.target, self.faults, kind=programmer, sck_duration=sck, vtarget=vtarget
            )
            startup = 0.0 if startup_ms is None else startup_ms
        if image:
            self.load_image(image)
        host = host_baud or baud
        self.to_target = Wire(host, baud, throttle=throttle)
        self.to_host = Wire(baud, host, throttle=throttle)
        self.mcu = Mcu(
            self.firmware,
            self.memory,
            self.to_target,
            self.to_host,
            throttle=throttle,
            faults=self.faults,
            startup_ms=startup,
        )

    def _log(self, text: str) -> None:
        mcu = getattr(self, "mcu", None)
        if mcu is not None:
            mcu.log(text)

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> Stk500v2Sim:
        """Build from URL or command-line options (each name may repeat). Raises
        ValueError for an unknown option, one of the other mode, or a bad value."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for sim://stk500v2; valid: {', '.join(OPTIONS)}"
            )
        one = {name: values[-1] for name, values in options.items()}
        mode = one.get("mode", "bootloader").lower()
        other = ISP_OPTIONS if mode == "bootloader" else BOOTLOADER_OPTIONS
        misplaced = sorted(set(one) & set(other))
        if misplaced:
            raise ValueError(f"option {misplaced[0]!r} does not apply to mode={mode}")
        kwargs: dict = {"host_baud": host_baud, "mode": mode}
        for name in ("chip", "image", "build", "programmer"):
            if name in one:
                kwargs[name] = one[name].lower() if name != "image" else one[name]
        floats = ("throttle", "page_ms", "startup_ms", "timeout_ms", "getch_ms", "eeprom_ms")
        for name in (*floats, "vtarget", "xtal"):
            if name in one:
                kwargs[name] = number_option(name, one[name])
        for name in ("baud", "sck"):
            if name in one:
                kwargs[name] = int(number_option(name, one[name]))
        if "cal" in one:
            kwargs["cal"] = _hex_byte("cal", one["cal"])
        if "lock" in one:
            kwargs["lock"] = _hex_byte("lock", one["lock"])
        if "fuses" in one:
            kwargs["fuses"] = parse_fuses(one["fuses"])
        if "fault" in options:
            kwargs["faults"] = Stk500v2Faults.parse(options["fault"])
        return cls(**kwargs)

    # ------------------------------------------------------------------ running

    def reset(self) -> None:
        """A DTR/RTS edge: resets the Mega through its capacitor; a programmer ignores it."""
        if self.mode == "bootloader":
            self.mcu.external_reset(EXTRF)

    def power_cycle(self) -> None:
        self.mcu.external_reset(PORF)

    def load_image(self, path: str) -> None:
        """Program ``path`` (.hex, .bin at 0, .elf) into flash (and EEPROM from an ELF).
        Raises ValueError if it cannot be read or does not fit (in bootloader mode: below
        the boot section)."""
        from flashsh.images.load import load_image

        try:
            image = load_image(path)
        except FlashshError as exc:
            raise ValueError(str(exc)) from None
        segments = [(s.address, s.data) for s in image.segments]
        eeprom = image.extra.get("eeprom")
        ee_segments = [(s.address, s.data) for s in eeprom.segments] if eeprom else []
        if self.mode == "bootloader":
            self.memory.load(segments)
            self.memory.load(ee_segments, memory="eeprom")
            return
        # An ISP programmer can fill the whole flash, boot section included.
        for memory, segs in (("flash", segments), ("eeprom", ee_segments)):
            target = getattr(self.memory, memory)
            for address, data in segs:
                if address + len(data) > len(target):
                    raise ValueError(f"image data at 0x{address:x}+{len(data)} beyond the {memory}")
                target[address : address + len(data)] = data

    # ------------------------------------------------------------------ inspection

    @property
    def flash(self) -> bytes:
        return bytes(self.memory.flash)

    @property
    def eeprom(self) -> bytes:
        return bytes(self.memory.eeprom)

    @property
    def fuses(self) -> tuple[int, int, int]:
        """(lfuse, hfuse, efuse) as the chip reads them back."""
        if self.target is not None:
            return self.target.lfuse, self.target.hfuse, self.target.efuse
        boot = self.firmware
        assert isinstance(boot, WiringBootloader)
        return boot.lfuse, boot.hfuse, boot.efuse

    @property
    def lock(self) -> int:
        return self.target.lock if self.target is not None else self.memory.lock

    @property
    def state(self) -> str:
        return self.mcu.state

    def describe(self) -> str:
        if self.mode == "bootloader":
            return (
                f"{self.part.name} with {self.firmware.name} at {self.baud} baud, "
                f"boot section 0x{self.memory.boot_start:x}-0x{self.part.flash_size - 1:x}"
            )
        low, high, ext = self.fuses
        return (
            f"{self.firmware.name} at {self.baud} baud, target {self.part.name} "
            f"(fuses {low:02X}:{high:02X}:{ext:02X}, lock {self.lock:02X})"
        )
