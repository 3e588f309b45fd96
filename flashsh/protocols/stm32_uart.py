"""The STM32 system-memory (ROM) bootloader over a USART, 8E1 (ST AN3155).

The ROM is in every STM32 and needs nothing in flash: BOOT0 high at reset starts it, a
0x7F sets its baud rate, and from then on it waits for commands for ever (no idle
timeout, so no keep-alive). Flash must be erased before it is written; flashsh erases
exactly the pages or sectors an image touches. Framing is in stm32_wire, the RTS/DTR
entry sequence in stm32_entry, option bytes in stm32_options. What the chip is, in
stm32_facts. Chip facts come from ``flashsh/chips/data/stm32.toml``; protocol facts from
the fact sheet /work/shared/protocols/stm32-rom-uart.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from flashsh.chips.stm32 import Stm32Chip
from flashsh.errors import FlashshError, NoAnswerError, ProtocolError, TargetError, UnsupportedError
from flashsh.numbers import hexaddr
from flashsh.protocols import stm32_options as options
from flashsh.protocols.base import Bootloader, Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.stm32_entry import EntrySequence, parse_entry
from flashsh.protocols.stm32_facts import Finding, chip_details, find_chip, no_answer_causes
from flashsh.protocols.stm32_wire import (
    COMMAND_NAMES,
    ERASE,
    EXTENDED_ERASE,
    GET,
    GET_ID,
    GET_VERSION,
    GO,
    MAX_TRANSFER,
    READ_MEMORY,
    READOUT_PROTECT,
    READOUT_UNPROTECT,
    WRITE_MEMORY,
    WRITE_PROTECT,
    WRITE_UNPROTECT,
    Nack,
    RomLink,
    command_name,
)
from flashsh.transports.base import ByteLink

#: Page numbers per Erase command: its count byte holds N-1 and 0xFF means "global".
ERASE_MAX_PAGES = 255
#: Per Extended Erase: STM32L152 takes no more than 512, STM32L082 no more than 511
#: (fact sheet §5.8).
EXTENDED_ERASE_MAX_PAGES = 511
#: Option-byte changes (Write Protect, Write Unprotect, Readout Protect) erase and program
#: one option page before the final ACK; stm32flash allows 1 s.
OPTION_TIMEOUT = 2.0
#: Margin on the data sheets' maximum erase and programming times.
TIME_MARGIN = 2.0
#: Time for the chip to reset and the ROM to start listening again.
RESET_SETTLE = 0.1
#: 0x7F bytes sent when reconnecting: a ROM left inside a command needs a few to finish it.
RECONNECT_SYNCS = 6

READOUT_HINT = "`unprotect readout` lifts it, and erases the whole flash"


class Stm32Uart(Bootloader):
    """An STM32 ROM bootloader on a serial port."""

    name = "stm32"
    baudrates = (115200, 57600)
    serial_format = "8E1"
    probe_options = ("entry",)

    def __init__(
        self, link: ByteLink, chip: str | None = None, entry: EntrySequence | None = None
    ) -> None:
        super().__init__(link)
        self.rom = RomLink(link)
        self.chip_override = chip
        self.entry = entry
        self.may_reset = True
        self.version = 0
        self.commands: tuple[int, ...] = ()
        self.version_bytes = b""
        self.pid = 0
        self.found: Finding | None = None
        self.rdp_active = False
        self.options_raw: bytes | None = None
        self.how = ""

    # ---------------------------------------------------------------- connection

    @classmethod
    def probe(
        cls, link: ByteLink, *, reset: bool, chip: str | None = None, entry: str | None = None
    ) -> Stm32Uart | None:
        """Send 0x7F (after the entry sequence, if there is one and resets are allowed)
        and, if the ROM answers, confirm with Get. Sends nothing else before that."""
        self = cls(link, chip, parse_entry(entry) if entry else None)
        self.may_reset = reset
        link.set_format(cls.serial_format)
        # Two bytes as stm32flash sends; a third for a sync ACK lost on the line, after
        # which the second 0x7F only opens a command and the third draws the NACK.
        answer = self._enter(attempts=3)
        if answer is None:
            return None
        try:
            self._initialise()
        except ProtocolError:
            return None  # answered 0x7F by chance, but no ROM: let detection go on
        entered = "after the --entry sequence, " if self.entry and reset else ""
        self.how = f"0x7F answered at {link.baudrate} baud {entered}" + (
            "(auto-baud: the ROM was fresh from reset)"
            if answer == "ack"
            else "(NACK: an earlier connection had already set the ROM's baud rate)"
        )
        return self

    def _enter(self, attempts: int) -> str | None:
        if self.entry is not None and self.may_reset:
            self.entry.run_entry(self.link)
        # Answers to earlier probes or commands may still be arriving.
        self.link.drain(quiet=0.03, limit=0.3)
        return self.rom.sync(attempts)

    @classmethod
    def no_answer_hint(cls, link: ByteLink) -> str:
        return no_answer_causes(link, cls.serial_format)

    def _initialise(self) -> None:
        """Get Version, Get, Get ID (stm32flash's order: the STM32L412 ROM's extra ACK
        after the sync lands in Get Version's reply, which expects it); then the chip,
        its real flash size and its protection state."""
        _, self.version_bytes = self.rom.get_version()
        self.version, self.commands = self.rom.get()
        missing = [c for c in (GET, GET_VERSION, GET_ID) if c not in self.commands]
        if missing:
            raise ProtocolError(
                f"the ROM's Get list lacks {', '.join(command_name(c) for c in missing)}",
                "this is not an STM32 ROM flashsh can work with",
            )
        pid_bytes = self.rom.get_id()
        self.pid = int.from_bytes(pid_bytes[:2], "big")
        self.found = find_chip(self.rom, self.pid, self.commands, self.chip_override)
        self.rdp_active = self.found.rdp_active
        self.options_raw = None
        if not self.rdp_active and READ_MEMORY in self.commands:
            ob = self.chip.option_bytes
            try:
                self.options_raw = self.rom.read_memory(ob.address, ob.size)
            except Nack as nack:
                # Unreadable option bytes only cost the write-protection check.
                self.rdp_active = nack.stage == "command"
        self.capabilities = self._capabilities()

    def _capabilities(self) -> Capability:
        found = Capability.ERASE_BEFORE_WRITE
        offered = set(self.commands)
        if READ_MEMORY in offered:
            found |= Capability.READ
        if WRITE_MEMORY in offered:
            found |= Capability.WRITE
        if offered & {ERASE, EXTENDED_ERASE}:
            found |= Capability.CHIP_ERASE | Capability.PAGE_ERASE
        if offered & {WRITE_PROTECT, WRITE_UNPROTECT, READOUT_PROTECT, READOUT_UNPROTECT}:
            found |= Capability.PROTECTION
        return found

    # ---------------------------------------------------------------- facts

    @property
    def chip(self) -> Stm32Chip:
        if self.found is None:
            raise ProtocolError("not connected")
        return self.found.chip

    @property
    def rdp_level(self) -> int | None:
        if self.rdp_active:
            return 1  # level 2 would have switched the ROM off
        if self.options_raw is None:
            return None
        ob = self.chip.option_bytes
        return ob.rdp_level(self.options_raw[ob.rdp_offset])

    def _version_text(self) -> str:
        return f"{self.version >> 4}.{self.version & 0xF}"

    def identify(self) -> TargetInfo:
        found = self.found
        assert found is not None
        in_effect = self.link.format_in_effect()
        serial = self.link.serial_format
        if in_effect is not None and in_effect != serial:
            serial += f" asked; the port reports {in_effect} (a real STM32 needs the parity)"
        details: dict[str, object] = {
            "rom_version": self._version_text(),
            **chip_details(found, self.pid, self.rdp_level, self.options_raw),
            "commands": ", ".join(COMMAND_NAMES.get(c, f"0x{c:02X}") for c in self.commands),
            "serial_format": serial,
            "entry": self.entry.text if self.entry else "none (BOOT0 and reset by hand)",
        }
        if self.chip_override:
            details["chip_from"] = "--chip (product ID checked)"
        elif found.label != found.chip.name:
            details["chip_from"] = (
                "product ID and flash size; the package letter is not visible to the ROM"
            )
        return TargetInfo(
            protocol=self.name,
            bootloader=f"STM32 ROM bootloader v{self._version_text()} (USART)",
            chip=found.label,
            link=self.link.description,
            baudrate=self.link.baudrate,
            how=self.how,
            details=details,
        )

    def memory_map(self) -> MemoryMap:
        chip = self.chip
        ob = chip.option_bytes
        first, last = chip.system_memory
        regions = [
            Region(
                "flash",
                chip.flash_base,
                chip.flash_size,
                MAX_TRANSFER,
                chip.erase_units[0].size,
                "rw",
                0,
            ),
            Region("options", ob.address, ob.size, ob.size, ob.size, "r", 1),
            Region("system", first, last + 1 - first, MAX_TRANSFER, MAX_TRANSFER, "r", 2),
        ]
        free_ram = chip.bootloader_ram[1] + 1
        if free_ram < chip.ram_end:
            size = chip.ram_end - free_ram
            regions.append(Region("ram", free_ram, size, MAX_TRANSFER, MAX_TRANSFER, "rw", 3))
        return MemoryMap(tuple(regions), bootloader=None, app_start=chip.flash_base)

    # ---------------------------------------------------------------- errors

    def _require(self, code: int) -> None:
        if code not in self.commands:
            raise UnsupportedError(
                f"this STM32 ROM does not offer {command_name(code)}",
                f"its Get list: {', '.join(f'0x{c:02X}' for c in self.commands)}",
            )

    def _refuse_if_readout_protected(self, what: str) -> None:
        if self.rdp_active:
            raise TargetError(
                f"the chip is read-out protected, so the ROM refuses {what}", READOUT_HINT
            )

    @contextmanager
    def _rom_errors(self, what: str, address: int | None = None) -> Iterator[None]:
        """Turn a NACK into what it means for the user."""
        try:
            yield
        except Nack as nack:
            if nack.stage == "command" and self._readout_protected():
                raise TargetError(
                    f"the chip is read-out protected, so the ROM refuses {what}", READOUT_HINT
                ) from None
            where = f" at {hexaddr(address)}" if address is not None else ""
            hint = (
                "a byte may have been garbled on the line; run the command again"
                if nack.stage == "command"
                else "the address may be outside what the ROM allows; `info` shows the memories"
            )
            raise TargetError(
                f"the ROM refused {what}{where} ({COMMAND_NAMES.get(nack.code, 'command')}, "
                f"{nack.stage} stage)",
                hint,
            ) from None

    def _readout_protected(self) -> bool:
        """After a command offered in Get's list was refused outright: is it read-out
        protection (Read Memory refused too) or a garbled byte? Updates the state."""
        if READ_MEMORY in self.commands:
            try:
                self.rom.read_memory(self.chip.flash_base, 1)
            except Nack as nack:
                self.rdp_active = nack.stage == "command"
            except ProtocolError:
                return True  # cannot tell; protection is the documented reason
            else:
                self.rdp_active = False
        else:
            self.rdp_active = True
        return self.rdp_active

    # ---------------------------------------------------------------- memory access

    def read(self, region: Region, address: int, length: int) -> bytes:
        self._require(READ_MEMORY)
        out = bytearray()
        while len(out) < length:
            here = address + len(out)
            block = min(length - len(out), MAX_TRANSFER)
            with self._rom_errors(f"reading {region.name}", here):
                out += self.rom.read_memory(here, block)
        return bytes(out)

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        """Write Memory in blocks of up to 256 bytes; the tail is padded with 0xFF to the
        flash's programming width (4 bytes, 8 on G0). Flash must be erased first."""
        self._require(WRITE_MEMORY)
        if "w" not in region.access:
            # Option bytes change only through protect/unprotect: a raw write resets the
            # chip and can set read-out protection level 2 for good.
            raise TargetError(f"{region.name} is read-only here", "see `help protect`")
        chip = self.chip
        grain = max(chip.write_align, chip.program_width)
        if address % chip.write_align:
            raise TargetError(
                f"write at {hexaddr(address)} is not {chip.write_align}-byte aligned",
                f"the ROM writes whole words; start at a multiple of {chip.write_align}",
            )
        data = data + b"\xff" * (-len(data) % grain)
        for offset in range(0, len(data), MAX_TRANSFER):
            block = data[offset : offset + MAX_TRANSFER]
            timeout = TIME_MARGIN * chip.program_ms(len(block))[1] / 1000 + 0.5
            with self._rom_errors(f"writing {region.name}", address + offset):
                self.rom.write_memory(address + offset, block, timeout)

    # ---------------------------------------------------------------- erasing

    def erase_units(self, region: Region, start: int, end: int) -> list[tuple[int, int]]:
        if region.name != "flash":
            return super().erase_units(region, start, end)
        return [(u.address, u.end) for u in self.chip.units_for(start, end)]

    def erase_range(self, region: Region, start: int, end: int) -> None:
        """Erase (0x43) or Extended Erase (0x44), whichever Get lists, of exactly the
        pages or sectors [start, end); refused before anything is sent if that touches
        write-protected flash, which the ROM would silently leave alone."""
        units = self.chip.units_for(start, end)
        if region.name != "flash" or not units:
            raise TargetError(f"nothing to erase at {hexaddr(start)}-{hexaddr(end - 1)}")
        if units[0].address != start or units[-1].end != end:
            raise TargetError(
                f"{hexaddr(start)}-{hexaddr(end - 1)} does not start and end on page or "
                "sector boundaries"
            )
        self._refuse_if_readout_protected("erasing")
        self._refuse_if_write_protected(start, end)
        extended = self._erase_command() == EXTENDED_ERASE
        chunk = EXTENDED_ERASE_MAX_PAGES if extended else ERASE_MAX_PAGES
        for first in range(0, len(units), chunk):
            part = units[first : first + chunk]
            timeout = 1.0 + sum(TIME_MARGIN * self.chip.erase_ms(u)[1] / 1000 for u in part)
            with self._rom_errors("erasing", part[0].address):
                self.rom.erase_pages([u.index for u in part], extended, timeout)

    def erase_chip(self) -> None:
        """Mass erase: 0x43 FF 00 or 0x44 FF FF 00."""
        extended = self._erase_command() == EXTENDED_ERASE
        self._refuse_if_readout_protected("a mass erase")
        self._refuse_if_write_protected(self.chip.flash_base, self.chip.flash_end)
        with self._rom_errors("a mass erase"):
            self.rom.mass_erase(extended, self._mass_erase_timeout())

    def _erase_command(self) -> int:
        for code in (EXTENDED_ERASE, ERASE):
            if code in self.commands:
                return code
        raise UnsupportedError("this STM32 ROM offers neither Erase nor Extended Erase")

    def _mass_erase_timeout(self) -> float:
        return 1.0 + TIME_MARGIN * self.chip.mass_erase_ms[1] / 1000

    def _refuse_if_write_protected(self, start: int, end: int) -> None:
        if self.options_raw is None:
            return
        chip = self.chip
        hit = [
            s
            for s in options.protected_sectors(chip, self.options_raw)
            if options.sector_span(chip, s)[0] < end and start < options.sector_span(chip, s)[1]
        ]
        if hit:
            raise TargetError(
                f"{options.spans_text(chip, hit)} is write-protected; the ROM would leave it "
                "unchanged and say nothing",
                "`unprotect write` clears it; the chip resets",
            )

    # ---------------------------------------------------------------- protection

    def read_options(self) -> dict[str, object]:
        chip = self.chip
        if self.rdp_active:
            return {
                "readout_protection": 1,
                "note": "the option bytes cannot be read while read-out protection is on",
            }
        self._require(READ_MEMORY)
        ob = chip.option_bytes
        with self._rom_errors("reading the option bytes", ob.address):
            self.options_raw = self.rom.read_memory(ob.address, ob.size)
        return options.decode(chip, self.options_raw)

    def set_protection(
        self, kind: str, enabled: bool, span: tuple[int, int] | None = None
    ) -> dict[str, object]:
        """Write Protect / Write Unprotect / Readout Protect / Readout Unprotect. Each
        makes the chip reset; the ROM is synchronised and read again afterwards."""
        chip = self.chip
        if not enabled and not self._is_protected(kind):
            # Nothing to lift: no command, no reset, no erase (recovery scripts rely on it).
            return {"kind": kind, "enabled": False, "changed": False, **self._state()}
        if kind == "readout":
            code = READOUT_PROTECT if enabled else READOUT_UNPROTECT
            self._require(code)
            if enabled and self.rdp_active:
                raise TargetError("read-out protection is already on")
            # Removing it erases the whole flash before the second ACK.
            timeout = OPTION_TIMEOUT if enabled else self._mass_erase_timeout() + 1.0
            with self._rom_errors("changing read-out protection"):
                self.rom.two_ack_command(code, timeout)
        elif kind == "write":
            self._refuse_if_readout_protected("changing write protection")
            if enabled:
                self._require(WRITE_PROTECT)
                start, end = span or (chip.flash_base, chip.flash_end)
                wanted = options.sectors_for(chip, start, end)
                if not wanted:
                    raise TargetError(f"{hexaddr(start)}-{hexaddr(end - 1)} is not in flash")
                # Write Protect replaces the whole set: keep what is protected already.
                current = options.protected_sectors(
                    chip, self.options_raw or chip.option_bytes.default
                )
                with self._rom_errors("write protection"):
                    self.rom.write_protect(sorted(set(current) | set(wanted)), OPTION_TIMEOUT)
            else:
                self._require(WRITE_UNPROTECT)
                with self._rom_errors("removing write protection"):
                    self.rom.two_ack_command(WRITE_UNPROTECT, OPTION_TIMEOUT)
        else:
            raise FlashshError(f"no such protection: {kind!r}", "write or readout")
        self._after_reset(f"{'setting' if enabled else 'clearing'} {kind} protection")
        return {"kind": kind, "enabled": enabled, "changed": True, **self._state()}

    def _is_protected(self, kind: str) -> bool:
        """Whether there is ``kind`` protection to lift; True when it cannot be known."""
        if kind == "readout":
            return self.rdp_active
        if self.rdp_active or self.options_raw is None:
            return True  # let the ROM decide (and refuse under read-out protection)
        return bool(options.protected_sectors(self.chip, self.options_raw))

    def _state(self) -> dict[str, object]:
        state: dict[str, object] = {"readout_protection": self.rdp_level}
        if self.options_raw is not None:
            sectors = options.protected_sectors(self.chip, self.options_raw)
            state["write_protected"] = options.spans_text(self.chip, sectors)
        return state

    def _after_reset(self, what: str) -> None:
        """The chip resets after option-byte changes; BOOT0 still high brings the ROM
        back, which needs a fresh 0x7F (fact sheet §6)."""
        time.sleep(RESET_SETTLE)
        self.link.drain(quiet=0.03, limit=0.3)
        if self.rom.sync(attempts=3) is None:
            raise NoAnswerError(
                f"the chip reset after {what} and its ROM did not answer again",
                "keep BOOT0 high, press reset and `connect` again",
            )
        self._initialise()

    # ---------------------------------------------------------------- session

    def go(self, address: int) -> None:
        """Go: the ROM loads the stack pointer from ``address`` and jumps to the reset
        vector at ``address + 4``, so ``address`` is a vector table in flash or RAM."""
        self._require(GO)
        chip = self.chip
        free_ram = chip.bootloader_ram[1] + 1
        if not (chip.flash_base <= address < chip.flash_end or free_ram <= address < chip.ram_end):
            raise TargetError(
                f"Go to {hexaddr(address)} is outside flash and the RAM the ROM leaves free",
                f"give an application's vector table, e.g. {hexaddr(chip.flash_base)}",
            )
        self._refuse_if_readout_protected("Go")
        with self._rom_errors("Go", address):
            self.rom.go(address)

    def keep_alive(self) -> None:
        """No idle timeout to beat; this only checks that the ROM still answers."""
        self.rom.get_version()

    def reconnect(self) -> None:
        if self._enter(attempts=RECONNECT_SYNCS) is None:
            hint = (
                "check the --entry wiring, or press reset with BOOT0 high"
                if self.entry and self.may_reset
                else "set BOOT0 high and press reset, then run the command again"
            )
            raise NoAnswerError("the STM32 ROM is not answering", hint)
        self._initialise()

    def start_application(self) -> None:
        """The exit sequence (BOOT0 low, reset) when --entry has one, else Go to the
        start of flash."""
        if self.entry is not None and self.entry.run_exit(self.link):
            return
        self.go(self.chip.flash_base)
