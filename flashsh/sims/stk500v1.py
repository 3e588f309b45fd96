"""The Arduino STK500v1 bootloaders as they really behave: optiboot and ATmegaBOOT_168.

Each model is written the way the firmware is: a main loop that reads a command byte with
``getch()`` and dispatches, ``verify_space()`` before each reply, the watchdog (optiboot)
or a per-byte timeout (ATmegaBOOT) as the way out. The behaviour follows the fact sheet
docs/protocols/stk500v1.md section 4; where the two bootloaders deviate from AVR061, so
do these models. Chip timing (page writes, LED blinks) comes from :mod:`flashsh.sims.mcu`.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashsh import chips
from flashsh.chips import AvrPart
from flashsh.errors import FlashshError, TargetError
from flashsh.sims.board import UartBoard, number_option
from flashsh.sims.faults import Faults
from flashsh.sims.mcu import EXTRF, PORF, STARTUP_MS, WDRF, Mcu, StartApplication
from flashsh.sims.memory import EEPROM_WRITE_MS, PAGE_ERASE_MS, PAGE_WRITE_MS, ChipMemory
from flashsh.sims.wire import Wire

# AVR061 "Response Definitions" and "Command Definitions"; names as in the note.
STK_OK = 0x10
STK_INSYNC = 0x14
CRC_EOP = 0x20
STK_GET_SYNC = 0x30
STK_GET_SIGN_ON = 0x31
STK_SET_PARAMETER = 0x40
STK_GET_PARAMETER = 0x41
STK_SET_DEVICE = 0x42
STK_SET_DEVICE_EXT = 0x45
STK_ENTER_PROGMODE = 0x50
STK_LEAVE_PROGMODE = 0x51
STK_CHIP_ERASE = 0x52
STK_LOAD_ADDRESS = 0x55
STK_UNIVERSAL = 0x56
STK_PROG_PAGE = 0x64
STK_READ_PAGE = 0x74
STK_READ_SIGN = 0x75
STK_READ_OSCCAL = 0x76
Parm_STK_HW_VER = 0x80
Parm_STK_SW_MAJOR = 0x81
Parm_STK_SW_MINOR = 0x82
Parm_STK_TOPCARD_DETECT = 0x98
# ISP "Load Extended Address Byte" (AVR068 / part datasheets), accepted by optiboot >= 7.
AVR_OP_LOAD_EXT_ADDR = 0x4D
# ISP "Read Signature Byte" first instruction byte.
AVR_OP_READ_SIGNATURE = 0x30

# Watchdog periods: WDP 0110 = 128K cycles and WDP 0000 = 2K cycles of the 128 kHz
# watchdog oscillator (datasheet "Watchdog Timer Prescale Select").
WDT_1S = 131072 / 128000
WDT_16MS = 2048 / 128000
# optiboot's start-up LED: each toggle waits for Timer1 (F_CPU/1024) to count 1/16 s.
OPTIBOOT_LED_TOGGLE = 1 / 16
# ATmegaBOOT's getch gives up after MAX_TIME_COUNT = F_CPU>>4 polling loops. Running the
# shipped ATmegaBOOT_168_atmega328.hex in simavr at 16 MHz, the last byte to the
# application start took 1.125 s (18 cycles a loop).
ATMEGABOOT_GETCH_TIMEOUT = 1.125
# ATmegaBOOT's flash_led: LED on 100 ms, off 100 ms, per flash.
ATMEGABOOT_FLASH = 0.2
ATMEGABOOT_MAX_ERRORS = 5


@dataclass(frozen=True)
class Timing:
    """Chip-side durations in seconds, before the throttle."""

    page_erase: float = PAGE_ERASE_MS / 1000
    page_write: float = PAGE_WRITE_MS / 1000
    eeprom_write: float = EEPROM_WRITE_MS / 1000


class _Bootloader:
    """What both bootloaders share: the chip they run on and its compiled-in facts."""

    name = "bootloader"

    def __init__(self, part: AvrPart, memory: ChipMemory, timing: Timing) -> None:
        self.part = part
        self.memory = memory
        self.timing = timing
        self.signature = part.signature
        self.has_rampz = part.flash_size > 0x10000
        self.mcu: Mcu | None = None

    @property
    def chip(self) -> Mcu:
        assert self.mcu is not None, "firmware not running"
        return self.mcu

    def putch(self, value: int) -> None:
        self.chip.transmit(value)

    def log(self, what: str) -> None:
        self.chip.log(f"{self.name}: {what}")


# ---------------------------------------------------------------------- optiboot


class Optiboot(_Bootloader):
    """optiboot: version 4.4 (Arduino's Uno/Nano build) or 7.x/8.x (upstream)."""

    def __init__(
        self,
        part: AvrPart,
        memory: ChipMemory,
        timing: Timing,
        *,
        version: tuple[int, int] = (8, 3),
        eeprom: bool = False,
        flashes: int = 3,
        watchdog: float = WDT_1S,
    ) -> None:
        super().__init__(part, memory, timing)
        self.version = version
        self.name = f"optiboot {version[0]}.{version[1]}"
        # 4.4 predates the memtype handling, the MCUSR rework and extended addressing.
        self.classic = version < (5, 0)
        self.extended_address = self.has_rampz and version >= (7, 0)
        self.eeprom = eeprom and not self.classic
        self.flashes = flashes
        self.watchdog = watchdog
        # The data buffer sits in RAM that nothing initialises: its contents survive
        # resets, and at power-up they are whatever the cells settled to.
        self.buff = bytearray((i * 0x9D + 0x5B) & 0xFF for i in range(256))
        # Where SPM halts the CPU instead of reading while writing: the largest boot size.
        self.nrww_start = part.flash_size - max(part.boot_sizes)
        self.address = 0  # 16-bit byte address (the Z pointer)
        self.rampz = 0

    # -- entry ------------------------------------------------------------------

    def run(self, mcu: Mcu) -> None:
        self.mcu = mcu
        if not self._stays_in_bootloader():
            raise StartApplication
        mcu.uart_enable()
        mcu.wdt_config(self.watchdog)
        self.flash_led(self.flashes * 2)
        while True:
            command = self.getch()
            mcu.command_begins(command)
            self.dispatch(command)
            self.putch(STK_OK)
            mcu.command_ends()

    def _stays_in_bootloader(self) -> bool:
        mcu = self.chip
        reasons = mcu.mcusr
        if self.classic:
            # 4.4 clears MCUSR and runs only after an external reset.
            mcu.mcusr = 0
            return bool(reasons & EXTRF)
        # 7.x/8.x: MCUSR 0 means the application jumped here on purpose.
        if reasons == 0:
            return True
        if reasons & (WDRF | EXTRF) != EXTRF:
            if reasons & EXTRF:
                # WDRF with EXTRF: our own timeout; clear it so the next reset boots us.
                mcu.mcusr = reasons & ~WDRF
            return False
        return True

    def flash_led(self, toggles: int) -> None:
        mcu = self.chip
        for _ in range(toggles):
            mcu.busy(OPTIBOOT_LED_TOGGLE)
            mcu.wdt_reset()
            # 8.x stops blinking as soon as a byte is waiting; 4.4 blinks on while the
            # receiver overflows.
            if not self.classic and mcu.rx_ready():
                break

    # -- serial -----------------------------------------------------------------

    def getch(self) -> int:
        byte = self.chip.receive(None)
        assert byte is not None
        # A framing error means someone talks at another baud rate: do not feed the
        # watchdog, so the application starts soon.
        if not byte.framing_error:
            self.chip.wdt_reset()
        return byte.value

    def verify_space(self) -> None:
        if self.getch() != CRC_EOP:
            self.log("no 0x20 after the command: waiting for the watchdog")
            self.chip.wdt_config(WDT_16MS)
            self.chip.spin()
        self.putch(STK_INSYNC)

    def get_nch(self, count: int) -> None:
        for _ in range(count):
            self.getch()
        self.verify_space()

    # -- commands ---------------------------------------------------------------

    def dispatch(self, command: int) -> None:
        if command == STK_GET_PARAMETER:
            which = self.getch()
            self.verify_space()
            if which == Parm_STK_SW_MINOR:
                self.putch(self.version[1])
            elif which == Parm_STK_SW_MAJOR:
                self.putch(self.version[0])
            else:
                self.putch(0x03)  # one generic answer for every other parameter
        elif command == STK_SET_DEVICE:
            self.get_nch(20)
        elif command == STK_SET_DEVICE_EXT:
            self.get_nch(5)
        elif command == STK_LOAD_ADDRESS:
            self.load_address()
        elif command == STK_UNIVERSAL:
            self.universal()
        elif command == STK_PROG_PAGE:
            self.prog_page()
        elif command == STK_READ_PAGE:
            self.read_page()
        elif command == STK_READ_SIGN:
            self.verify_space()
            for value in self.signature:
                self.putch(value)
        elif command == STK_LEAVE_PROGMODE:
            # Reply, then let a 16 ms watchdog start the application.
            self.chip.wdt_config(WDT_16MS)
            self.verify_space()
        else:
            # GET_SYNC, ENTER_PROGMODE, CHIP_ERASE (no erase!) and anything unknown.
            self.verify_space()

    def load_address(self) -> None:
        low = self.getch()
        high = self.getch()
        if self.has_rampz:
            # Word address bit 15 selects the upper 64 KiB through RAMPZ bit 0.
            if self.classic:
                self.rampz = high >> 7
            else:
                self.rampz = (self.rampz & 0xFE) | (high >> 7)
        self.address = ((high << 8 | low) * 2) & 0xFFFF
        self.verify_space()

    def universal(self) -> None:
        if self.extended_address:
            if self.getch() == AVR_OP_LOAD_EXT_ADDR:
                self.getch()
                ext = self.getch()
                # The extended byte holds word address bits 23..16: RAMPZ bits 7..1.
                self.rampz = (self.rampz & 0x01) | ((ext << 1) & 0xFF)
                self.get_nch(1)
            else:
                self.get_nch(3)
        else:
            self.get_nch(4)
        self.putch(0x00)  # never a real ISP answer: fuses and lock bits read as 0

    def _length(self) -> int:
        """GETLENGTH: 16 bits only where a page has more than 255 bytes; 0 wraps."""
        if self.classic or self.part.flash_page <= 255:
            self.getch()
            return self.getch() or 0x100
        return (self.getch() << 8 | self.getch()) or 0x10000

    def _spm_address(self) -> int:
        return (self.rampz << 16 | self.address) if self.has_rampz else self.address

    def _store(self, index: int, value: int) -> None:
        if index >= len(self.buff):
            self.buff.extend(bytes(index + 1 - len(self.buff)))
        self.buff[index] = value

    def prog_page(self) -> None:
        if self.classic:
            self._prog_page_classic()
            return
        length = self._length()
        memtype = self.getch()
        for i in range(length):
            self._store(i, self.getch())
        self.verify_space()
        if memtype == ord("E"):
            if not self.eeprom:
                self.log("EEPROM write without EEPROM support: waiting for the watchdog")
                self.chip.spin()
            for i in range(length):
                self.memory.eeprom_write((self.address + i) & 0xFFFF, self.buff[i])
                self.chip.busy(self.timing.eeprom_write)
            return
        # Anything but 'E' is flash.
        target = self._spm_address()
        self.memory.spm_erase(target)
        self.chip.busy(self.timing.page_erase)
        if length % 2:
            # The fill loop counts down by two and never reaches zero.
            self.log(f"odd block length {length}: fill loop never ends")
            self.chip.spin()
        for i in range(0, length, 2):
            self.memory.spm_fill(target + i, self.buff[i], self.buff[i + 1])
        self.memory.spm_write(target)
        self.chip.busy(self.timing.page_write)

    def _prog_page_classic(self) -> None:
        """4.4: low length byte only, memtype ignored, always a whole page from RAM."""
        mcu = self.chip
        self.getch()
        length = self.getch() or 0x100
        self.getch()  # memtype: 'E' writes flash too
        target = self._spm_address()
        erase_started = None
        # In the RWW section the erase starts at once and runs while the data arrives.
        if target < self.nrww_start:
            self.memory.spm_erase(target)
            erase_started = mcu.now
        for i in range(length):
            self._store(i, self.getch())
        if erase_started is None:
            self.memory.spm_erase(target)
            erase_started = mcu.now
        self.verify_space()
        erase_done = erase_started + self.timing.page_erase * mcu.throttle
        mcu.advance(max(mcu.now, erase_done))
        page = self.part.flash_page
        for i in range(0, page, 2):
            self.memory.spm_fill(target + i, self.buff[i], self.buff[i + 1])
        self.memory.spm_write(target)
        mcu.busy(self.timing.page_write)

    def read_page(self) -> None:
        if self.classic:
            self.getch()
            length = self.getch() or 0x100
            self.getch()  # memtype ignored: 'E' reads flash
            self.verify_space()
            for _ in range(length):
                # 4.4 reads with the Z pointer only (RAMPZ as loaded) and moves its own
                # address on: a second READ_PAGE continues where the first stopped.
                self.putch(self.memory.read_flash(self._spm_address()))
                self.address = (self.address + 1) & 0xFFFF
            return
        length = self._length()
        memtype = self.getch()
        self.verify_space()
        if memtype == ord("E") and self.eeprom:
            for i in range(length):
                self.putch(self.memory.eeprom_read((self.address + i) & 0xFFFF))
            return
        # Without EEPROM support 'E' falls through to flash. ELPM Z+ carries into RAMPZ.
        z = self._spm_address()
        for _ in range(length):
            self.putch(self.memory.read_flash(z))
            z = z + 1 if self.has_rampz else (z + 1) & 0xFFFF
        if self.has_rampz:
            self.rampz = (z >> 16) & 0xFF


# ---------------------------------------------------------------------- ATmegaBOOT


class AtmegaBoot(_Bootloader):
    """ATmegaBOOT_168 (Diecimila, Duemilanove, Nano-168, Mega 1280), version 1.16."""

    name = "ATmegaBOOT"
    HW_VER = 0x02
    SW_MAJOR = 0x01
    SW_MINOR = 0x10
    SIGN_ON = b"AVR ISP"

    def __init__(
        self,
        part: AvrPart,
        memory: ChipMemory,
        timing: Timing,
        *,
        flashes: int = 1,
        timeout: float = ATMEGABOOT_GETCH_TIMEOUT,
    ) -> None:
        super().__init__(part, memory, timing)
        self.flashes = flashes
        self.timeout = timeout
        self.page_words = part.flash_page // 2
        # The Mega build reads its UART directly in getNch, without the timeout, and has
        # the "!!!" monitor.
        self.mega = self.has_rampz
        self._reset_globals()

    def _reset_globals(self) -> None:
        # Globals live in .bss, which the C start-up code zeroes on every start.
        self.error_count = 0
        self.address = 0
        self.buff = bytearray(256)

    def run(self, mcu: Mcu) -> None:
        # The Arduino builds (no WATCHDOG_MODS) ignore MCUSR: they run after every reset.
        self.mcu = mcu
        self._reset_globals()
        mcu.uart_enable()
        for _ in range(self.flashes):
            mcu.busy(ATMEGABOOT_FLASH)
        while True:
            command = self.getch()
            mcu.command_begins(command)
            self.dispatch(command)
            mcu.command_ends()

    # -- serial -----------------------------------------------------------------

    def getch(self) -> int:
        byte = self.chip.receive(self.timeout)
        if byte is None:
            self.log("no byte in time: starting the application")
            raise StartApplication
        return byte.value

    def get_nch(self, count: int) -> None:
        for _ in range(count):
            if self.mega:
                byte = self.chip.receive(None)
                assert byte is not None
            else:
                self.getch()

    def error(self) -> None:
        self.error_count += 1
        if self.error_count == ATMEGABOOT_MAX_ERRORS:
            self.log(f"{ATMEGABOOT_MAX_ERRORS} errors: starting the application")
            raise StartApplication

    def nothing_response(self) -> None:
        if self.getch() == CRC_EOP:
            self.putch(STK_INSYNC)
            self.putch(STK_OK)
        else:
            self.error()

    def byte_response(self, value: int) -> None:
        if self.getch() == CRC_EOP:
            self.putch(STK_INSYNC)
            self.putch(value)
            self.putch(STK_OK)
        else:
            self.error()

    # -- commands ---------------------------------------------------------------

    def dispatch(self, command: int) -> None:
        if command in (STK_GET_SYNC, STK_ENTER_PROGMODE, STK_CHIP_ERASE, STK_LEAVE_PROGMODE):
            # CHIP_ERASE erases nothing; LEAVE_PROGMODE stays in the bootloader.
            self.nothing_response()
        elif command == STK_GET_SIGN_ON:
            if self.getch() == CRC_EOP:
                for value in bytes([STK_INSYNC]) + self.SIGN_ON + bytes([STK_OK]):
                    self.putch(value)
            else:
                self.error()
        elif command == STK_SET_PARAMETER:
            # Only parameters above 0x85 are followed by a value byte.
            if self.getch() > 0x85:
                self.getch()
            self.nothing_response()
        elif command == STK_GET_PARAMETER:
            which = self.getch()
            answers = {
                Parm_STK_HW_VER: self.HW_VER,
                Parm_STK_SW_MAJOR: self.SW_MAJOR,
                Parm_STK_SW_MINOR: self.SW_MINOR,
                Parm_STK_TOPCARD_DETECT: 0x03,
            }
            self.byte_response(answers.get(which, 0x00))
        elif command == STK_SET_DEVICE:
            self.get_nch(20)
            self.nothing_response()
        elif command == STK_SET_DEVICE_EXT:
            self.get_nch(5)
            self.nothing_response()
        elif command == STK_LOAD_ADDRESS:
            low = self.getch()
            self.address = self.getch() << 8 | low
            self.nothing_response()
        elif command == STK_UNIVERSAL:
            self.universal()
        elif command == STK_PROG_PAGE:
            self.prog_page()
        elif command == STK_READ_PAGE:
            self.read_page()
        elif command == STK_READ_SIGN:
            if self.getch() == CRC_EOP:
                for value in bytes([STK_INSYNC]) + self.signature + bytes([STK_OK]):
                    self.putch(value)
            else:
                self.error()
        elif command == STK_READ_OSCCAL:
            self.byte_response(0x00)
        elif command == ord("!") and self.mega:
            self.monitor()
        else:
            # Only the command byte is consumed; its 0x20 comes next as another unknown.
            self.error()

    def universal(self) -> None:
        if self.getch() == AVR_OP_READ_SIGNATURE:
            self.getch()
            index = self.getch()
            self.getch()
            self.byte_response(self.signature[min(index, 2)])
        else:
            self.get_nch(3)
            self.byte_response(0x00)  # fuses and lock bits cannot be read

    def prog_page(self) -> None:
        length = self.getch() << 8
        length |= self.getch()
        eeprom = self.getch() == ord("E")
        if length > len(self.buff):
            # The real buffer has 256 bytes and a longer block runs over the variables
            # behind it; that corruption is not modelled.
            self.buff.extend(bytes(length - len(self.buff)))
        for i in range(length):
            self.buff[i] = self.getch()
        if self.getch() != CRC_EOP:
            self.error()
            return
        if eeprom:
            # EEPROM addresses are doubled like flash ones.
            self.address = (self.address << 1) & 0xFFFF
            for i in range(length):
                self.memory.eeprom_write(self.address, self.buff[i])
                self.chip.busy(self.timing.eeprom_write)
                self.address = (self.address + 1) & 0xFFFF
        else:
            rampz = 1 if self.mega and self.address > 0x7FFF else 0
            self.address = (self.address << 1) & 0xFFFF
            self._write_flash(rampz, self.address, length + (length & 1))
        self.putch(STK_INSYNC)
        self.putch(STK_OK)

    def _write_flash(self, rampz: int, z: int, length: int) -> None:
        """The page loop: erase when a page starts, fill word by word, write after
        a page's worth of words and once more at the end for a partial page."""
        mcu, memory = self.chip, self.memory
        count = 0
        y = 0
        while True:
            if count == 0:
                memory.spm_erase(rampz << 16 | z)
                mcu.busy(self.timing.page_erase)
            low = self.buff[y] if y < len(self.buff) else 0
            high = self.buff[y + 1] if y + 1 < len(self.buff) else 0
            memory.spm_fill(rampz << 16 | z, low, high)
            y += 2
            count += 1
            if count >= self.page_words:
                count = 0
                memory.spm_write(rampz << 16 | z)
                mcu.busy(self.timing.page_write)
            z = (z + 2) & 0xFFFF
            length = (length - 2) & 0xFFFF
            if length == 0:
                if count:
                    memory.spm_write(rampz << 16 | z)
                    mcu.busy(self.timing.page_write)
                return

    def read_page(self) -> None:
        length = self.getch() << 8
        length |= self.getch()
        rampz = self.mega and self.address > 0x7FFF
        self.address = (self.address << 1) & 0xFFFF
        eeprom = self.getch() == ord("E")
        if self.getch() != CRC_EOP:
            return  # no reply and, unlike elsewhere, no error counted
        self.putch(STK_INSYNC)
        for _ in range(length):
            if eeprom:
                self.putch(self.memory.eeprom_read(self.address))
            else:
                self.putch(self.memory.read_flash(self.address + (0x10000 if rampz else 0)))
            self.address = (self.address + 1) & 0xFFFF
        self.putch(STK_OK)

    def monitor(self) -> None:
        """The Mega build's "!!!" text monitor. Entering it is modelled; its commands are
        not: input is read (with the usual timeout) and nothing is answered."""
        if self.getch() != ord("!") or self.getch() != ord("!"):
            return
        self.log("'!!!' entered the monitor (not modelled): no more STK500 answers")
        while True:
            self.getch()


# ---------------------------------------------------------------------- the board


BOOTLOADERS = ("optiboot", "atmegaboot")
OPTIBOOT_VERSIONS = ("4.4", "7.0", "8.0", "8.1", "8.2", "8.3")

#: URL / command-line options: name -> help.
OPTIONS = {
    "chip": "part name, e.g. atmega328p (default)",
    "bootloader": "optiboot (default) or atmegaboot",
    "version": "optiboot version: 4.4 or 7.0-8.3 (default 8.3)",
    "baud": "the bootloader's baud rate (default 115200 optiboot; ATmegaBOOT 57600, "
    "19200 on atmega168); 57600 for a Melzi-style 1284P",
    "throttle": "1 = real time (default), 0 = no delays, 0.1 = ten times faster",
    "page_ms": "flash page erase + write time in ms (default 8.2)",
    "eeprom_ms": "EEPROM byte write time in ms (default 3.3)",
    "timeout_ms": "watchdog period (optiboot, default 1024) or getch timeout "
    "(ATmegaBOOT, default 1125) in ms, not throttled",
    "startup_ms": "start-up delay after reset in ms (default 65)",
    "flashes": "start-up LED flashes (default 3 optiboot, 1 ATmegaBOOT)",
    "eeprom": "optiboot 7+/8.x built with EEPROM support: 1/0 (default 1 on the "
    "1 KiB builds for 256-byte-page parts)",
    "image": "file (.hex, .bin, .elf) programmed before the simulation starts",
    "fault": "drop:N, corrupt:N, stop:N, nosync:N, failed:N, dead (repeatable)",
}


def boot_size(bootloader: str, part: AvrPart) -> int:
    """The boot section the stock build of ``bootloader`` takes on ``part``."""
    facts = chips.bootloader_facts()[bootloader]
    if bootloader == "atmegaboot":
        sizes = facts["boot_size_by_part"]
        if part.key not in sizes:
            raise ValueError(f"ATmegaBOOT was built for {', '.join(sorted(sizes))}, not {part.key}")
        return int(sizes[part.key])
    return int(facts["boot_size_by_page"][str(part.flash_page)])


class Stk500v1Sim(UartBoard):
    """A board with an STK500v1 bootloader: memory, firmware and both UART wires.

    ``to_target`` carries the host's bytes, ``to_host`` the bootloader's. The bootloader's
    baud rate is fixed; the host's can change with :meth:`set_host_baud`.
    """

    protocol = "stk500v1"
    OPTIONS = OPTIONS

    def __init__(
        self,
        *,
        chip: str = "atmega328p",
        bootloader: str = "optiboot",
        version: str | None = None,
        baud: int | None = None,
        throttle: float = 1.0,
        page_ms: float | None = None,
        eeprom_ms: float = EEPROM_WRITE_MS,
        timeout_ms: float | None = None,
        startup_ms: float = STARTUP_MS,
        flashes: int | None = None,
        eeprom: bool | None = None,
        image: str | None = None,
        faults: Faults | None = None,
        host_baud: int | None = None,
    ) -> None:
        try:
            self.part = chips.avr_part(chip)
        except TargetError as exc:
            raise ValueError(str(exc)) from None
        bootloader = bootloader.lower()
        if bootloader not in BOOTLOADERS:
            raise ValueError(f"unknown bootloader {bootloader!r}; valid: {', '.join(BOOTLOADERS)}")
        self.bootloader = bootloader
        part = self.part
        page = (page_ms if page_ms is not None else PAGE_ERASE_MS + PAGE_WRITE_MS) / 1000
        timing = Timing(page / 2, page / 2, eeprom_ms / 1000)
        size = boot_size(bootloader, part)
        if bootloader == "optiboot":
            version = version or "8.3"
            if version not in OPTIBOOT_VERSIONS:
                raise ValueError(
                    f"optiboot version {version!r} is not modelled; valid: "
                    + ", ".join(OPTIBOOT_VERSIONS)
                )
            major, minor = (int(x) for x in version.split("."))
            label = f"optiboot {version} ".encode()
            self.memory = ChipMemory(part, size, boot_label=label)
            # optiboot keeps its version word in the last two bytes of flash.
            self.memory.flash[-2:] = bytes([minor, major])
            self.firmware: Optiboot | AtmegaBoot = Optiboot(
                part,
                self.memory,
                timing,
                version=(major, minor),
                eeprom=size >= 1024 if eeprom is None else eeprom,
                flashes=3 if flashes is None else flashes,
                watchdog=WDT_1S if timeout_ms is None else timeout_ms / 1000,
            )
            self.baud = baud or 115200
        else:
            if version not in (None, "1.16"):
                raise ValueError("ATmegaBOOT is modelled as version 1.16 only")
            self.memory = ChipMemory(part, size, boot_label=b"ATmegaBOOT 1.16 ")
            self.firmware = AtmegaBoot(
                part,
                self.memory,
                timing,
                flashes=1 if flashes is None else flashes,
                timeout=ATMEGABOOT_GETCH_TIMEOUT if timeout_ms is None else timeout_ms / 1000,
            )
            self.baud = baud or (19200 if part.key == "atmega168" else 57600)
        if image:
            self.load_image(image)
        host = host_baud or self.baud
        self.to_target = Wire(host, self.baud, throttle=throttle)
        self.to_host = Wire(self.baud, host, throttle=throttle)
        self.mcu = Mcu(
            self.firmware,
            self.memory,
            self.to_target,
            self.to_host,
            throttle=throttle,
            faults=faults,
            startup_ms=startup_ms,
        )

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> Stk500v1Sim:
        """Build from URL or command-line options (each name may repeat). Raises
        ValueError for an unknown option or a bad value."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for sim://stk500v1; valid: {', '.join(OPTIONS)}"
            )
        one = {name: values[-1] for name, values in options.items()}
        kwargs: dict = {"host_baud": host_baud}
        for name in ("chip", "bootloader", "version", "image"):
            if name in one:
                kwargs[name] = one[name]
        for name in ("throttle", "page_ms", "eeprom_ms", "timeout_ms", "startup_ms"):
            if name in one:
                kwargs[name] = number_option(name, one[name])
        for name in ("baud", "flashes"):
            if name in one:
                kwargs[name] = int(number_option(name, one[name]))
        if "eeprom" in one:
            if one["eeprom"] not in ("0", "1"):
                raise ValueError("option eeprom takes 0 or 1")
            kwargs["eeprom"] = one["eeprom"] == "1"
        if "fault" in options:
            kwargs["faults"] = Faults.parse(options["fault"])
        if kwargs.get("baud") == 0:
            raise ValueError("option baud must be positive")
        return cls(**kwargs)

    # ------------------------------------------------------------------ running

    def reset(self) -> None:
        """External reset: the DTR/RTS edge through the board's capacitor."""
        self.mcu.external_reset(EXTRF)

    def power_cycle(self) -> None:
        self.mcu.external_reset(PORF)

    def load_image(self, path: str) -> None:
        """Program ``path`` (.hex, .bin at 0, .elf) into flash (and EEPROM from an ELF)
        before the chip runs. Raises ValueError if it cannot be read or does not fit."""
        from flashsh.images.load import load_image

        try:
            image = load_image(path)
        except FlashshError as exc:
            raise ValueError(str(exc)) from None
        self.memory.load((s.address, s.data) for s in image.segments)
        eeprom = image.extra.get("eeprom")
        if eeprom is not None:
            self.memory.load(((s.address, s.data) for s in eeprom.segments), memory="eeprom")

    # ------------------------------------------------------------------ inspection

    @property
    def flash(self) -> bytes:
        return bytes(self.memory.flash)

    @property
    def eeprom(self) -> bytes:
        return bytes(self.memory.eeprom)

    @property
    def state(self) -> str:
        return self.mcu.state

    def describe(self) -> str:
        return (
            f"{self.part.name} with {self.firmware.name} at {self.baud} baud, "
            f"boot section 0x{self.memory.boot_start:x}-0x{self.part.flash_size - 1:x}"
        )
