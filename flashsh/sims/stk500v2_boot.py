"""The Arduino Mega 2560 "stk500boot_v2" (wiring) bootloader as it really behaves.

Written like the firmware: ``main`` waits for a first byte, then collects messages with a
byte-by-byte state machine, handles one, sends the answer, and goes round until
CMD_LEAVE_PROGMODE_ISP. Behaviour follows docs/protocols/stk500v2.md part B; the timings
and the monitor's output were measured on the shipped stk500boot_v2_mega2560.hex running
in simavr (tests/harness), 16 MHz:

* no first byte for 0.783 s after start-up: the exit path (50 ms), then a jump to
  address 0;
* on an erased chip the CPU runs through the blank flash (about 8 ms) into the
  bootloader, which starts again, so a blank board keeps answering;
* after a watchdog reset the shipped build calls its application pointer with EIND
  still 1 and lands at byte 0x20000, not 0: erased flash from there leads back into
  the bootloader, anything else is an application entered in its middle;
* after the first byte each further byte waits up to 5.0 s; then the bootloader jumps to
  the application if flash word 0 is not 0xFFFF, else it waits again;
* LEAVE_PROGMODE: the answer, 50 ms (``delay_ms(100)`` counts half milliseconds), then
  the application;
* the "!!!" monitor prints its text with a 16-bit pointer into the wrong 64 KiB bank: it
  prints whatever the *application* area holds at those addresses up to a 0x00 byte, on
  an erased chip an endless run of 0xFF; after ``Q`` the bootloader answers the stale
  message buffer once, then leaves as after LEAVE_PROGMODE.

The message buffer (285 bytes) and the answers built in it are modelled byte for byte,
since the monitor's exit and oversized messages expose them.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashsh.chips import AvrPart
from flashsh.sims.mcu import WDRF, Mcu, StartApplication
from flashsh.sims.memory import EEPROM_WRITE_MS, PAGE_ERASE_MS, PAGE_WRITE_MS, ChipMemory
from flashsh.sims.stk500v2_faults import Stk500v2Faults
from flashsh.sims.stk500v2_frame import (
    CMD_CHIP_ERASE_ISP,
    CMD_ENTER_PROGMODE_ISP,
    CMD_GET_PARAMETER,
    CMD_LEAVE_PROGMODE_ISP,
    CMD_LOAD_ADDRESS,
    CMD_PROGRAM_EEPROM_ISP,
    CMD_PROGRAM_FLASH_ISP,
    CMD_PROGRAM_LOCK_ISP,
    CMD_READ_EEPROM_ISP,
    CMD_READ_FLASH_ISP,
    CMD_READ_FUSE_ISP,
    CMD_READ_LOCK_ISP,
    CMD_READ_SIGNATURE_ISP,
    CMD_SET_PARAMETER,
    CMD_SIGN_ON,
    CMD_SPI_MULTI,
    MESSAGE_START,
    PARAM_BUILD_NUMBER_HIGH,
    PARAM_BUILD_NUMBER_LOW,
    PARAM_HW_VER,
    PARAM_SW_MAJOR,
    PARAM_SW_MINOR,
    STATUS_CMD_FAILED,
    STATUS_CMD_OK,
    TOKEN,
)

# The build's CONFIG_PARAM_* answers to GET_PARAMETER (B3).
CONFIG_PARAMS = {
    PARAM_BUILD_NUMBER_LOW: 0x00,
    PARAM_BUILD_NUMBER_HIGH: 0x00,
    PARAM_HW_VER: 0x0F,
    PARAM_SW_MAJOR: 0x02,
    PARAM_SW_MINOR: 0x0A,
}
SIGN_ON = b"AVRISP_2"
BUFFER_SIZE = 285
BOOT_SIZE = 8192  # BOOTLOADER_ADDRESS 0x3E000 on the ATmega2560
# Measured on the shipped hex in simavr (module docstring): the wait for a first byte,
# recchar_timeout's limit, and the exit path's delay_ms(100).
BOOT_WAIT = 0.783
GETCH_TIMEOUT = 5.0
LEAVE_DELAY = 0.050
# Where the watchdog path of the shipped build lands (EIND = 1, word 0x10000).
WATCHDOG_ENTRY = 0x20000
# WDRF set forces the watchdog on; its prescaler is back at 2K cycles of 128 kHz.
WDT_16MS = 2048 / 128000
# Erased flash executes at about one word per cycle at 16 MHz.
F_CPU = 16e6
# Only the first 9 received bytes can start the monitor in the fixed source.
MONITOR_WINDOW = 10
EXCLAMATION = 0x21

# Monitor texts: their 16-bit addresses in the shipped build, i.e. where in the lower
# 64 KiB of flash the monitor reads them from (see the module docstring).
BANNER_AT = 0xE2E6
PROMPT_AT = 0xE2DA
HUH_AT = 0xE2D5
#: Monitor key -> address of its help line (printed from its 3rd character on).
MONITOR_KEYS = {
    "0": 0xE177, "?": 0xE16B, "@": 0xE15D, "B": 0xE151, "E": 0xE143, "F": 0xE136,
    "H": 0xE12F, "L": 0xE11E, "Q": 0xE117, "R": 0xE10C, "V": 0xE0F3, "Y": 0xE0E6,
}  # fmt: skip
CRLF = b"\r\n"

# Lock bits SPM obeys (docs/protocols/avr-parts.md 3.4): BLB11 programmed forbids SPM in the boot
# section, BLB01 in the application section.
BLB11 = 0x10
BLB01 = 0x04


@dataclass(frozen=True)
class Timing:
    """Chip-side durations in seconds, before the throttle."""

    page_erase: float = PAGE_ERASE_MS / 1000
    page_write: float = PAGE_WRITE_MS / 1000
    eeprom_write: float = EEPROM_WRITE_MS / 1000


class LockedMemory(ChipMemory):
    """ChipMemory whose SPM protection follows the lock byte instead of a flag."""

    def __init__(self, part: AvrPart, boot_size: int, lock: int, **kw: object) -> None:
        self.lock = lock
        super().__init__(part, boot_size, **kw)  # type: ignore[arg-type]

    def _refused(self, page: int) -> bool:
        bit = BLB11 if page >= self.boot_start else BLB01
        if not self.lock & bit:
            self.stats.boot_writes_refused.append(page)
            return True
        return False


class WiringBootloader:
    """stk500boot_v2 for the ATmega2560; ``old=True`` gives the bugs of early builds:
    the monitor watches the whole stream, the sequence number must be 1 or the expected
    one, no watchdog check at start-up, and chip erase answers OK."""

    def __init__(
        self,
        part: AvrPart,
        memory: LockedMemory,
        fuses: tuple[int, int, int],
        faults: Stk500v2Faults,
        *,
        timing: Timing | None = None,
        old: bool = False,
        boot_wait: float = BOOT_WAIT,
        getch_timeout: float = GETCH_TIMEOUT,
    ) -> None:
        self.part = part
        self.memory = memory
        self.lfuse, self.hfuse, self.efuse = fuses
        self.faults = faults
        self.timing = timing or Timing()
        self.old = old
        self.name = "stk500boot_v2" + (" (old build)" if old else "")
        self.boot_wait = boot_wait
        self.getch_timeout = getch_timeout
        self.app_end = part.flash_size - 2 * BOOT_SIZE  # the source doubles the boot size
        self.signature = part.signature
        # Stack RAM: nothing initialises it, it keeps its contents across resets.
        self.buffer = bytearray(BUFFER_SIZE)
        self.messages = 0
        self.monitor_runs = 0
        # main()'s locals; session() sets them on every start.
        self.address = 0
        self.erase_address = 0
        self.leave = False
        self.mcu: Mcu | None = None

    @property
    def chip(self) -> Mcu:
        assert self.mcu is not None, "firmware not running"
        return self.mcu

    @property
    def lock(self) -> int:
        return self.memory.lock

    def log(self, what: str) -> None:
        self.chip.log(f"{self.name}: {what}")

    def putch(self, value: int) -> None:
        self.chip.transmit(value)

    # ------------------------------------------------------------------ entry and exit

    def run(self, mcu: Mcu) -> None:
        self.mcu = mcu
        mcu.uart_enable()
        while True:  # one pass = main() from the top
            reasons = mcu.mcusr
            if not self.old:
                # Issue 181 fix: clear MCUSR, stop the watchdog, and after a watchdog
                # reset call the application (see the module docstring for where).
                mcu.mcusr = 0
                mcu.wdt_config(None)
                if reasons & WDRF:
                    self.jump(WATCHDOG_ENTRY)
                    continue
            elif reasons & WDRF:
                # Early builds leave WDRF set, which keeps the watchdog on at its shortest
                # period: a reset every 16 ms until power is removed (issue 181).
                mcu.wdt_config(WDT_16MS)
            first = mcu.receive(self.boot_wait)
            if first is not None:
                self.session(first.value)
            # The exit path, taken after LEAVE_PROGMODE, the monitor, or no first byte.
            self.log("leaving the bootloader")
            mcu.busy(LEAVE_DELAY)
            self.jump(0)

    def jump(self, entry: int) -> None:
        """Jump to byte address ``entry``. Erased flash from there leads the CPU back into
        the bootloader, which starts again (MCUSR as it is); anything else is the
        application."""
        memory = self.memory
        blank = memory.flash[entry : memory.boot_start]
        if blank.count(0xFF) != len(blank):
            raise StartApplication
        self.log(f"erased flash from 0x{entry:x}: running through it into the bootloader")
        self.chip.busy(len(blank) / 2 / F_CPU)

    def getch(self) -> int:
        """``recchar_timeout``: a byte, or after the timeout the application if there is
        one (word 0 not erased), else keep waiting."""
        while True:
            byte = self.chip.receive(self.getch_timeout)
            if byte is not None:
                return byte.value
            if self.memory.flash[0:2] != b"\xff\xff":
                self.log("receive timeout: starting the application")
                raise StartApplication

    # ------------------------------------------------------------------ messages

    def session(self, first: int) -> None:
        """The main loop, from the first received byte until it decides to leave."""
        # Locals of main(), initialised there on every start.
        self.address = 0
        self.erase_address = 0
        self.leave = False
        seq = 0
        pending: int | None = first
        received = 0  # rcvdCharCntr, 16 bits
        exclamations = 0
        while not self.leave:
            state = "start"
            check = length = index = 0
            while state != "process":
                if pending is not None:
                    c, pending = pending, None
                else:
                    c = self.getch()
                received = (received + 1) & 0xFFFF
                if c == EXCLAMATION and (self.old or received < MONITOR_WINDOW):
                    exclamations += 1
                    if exclamations == 3:
                        self.monitor()
                        exclamations = 0
                        self.leave = True
                        # The stale buffer is handled and answered once more below.
                        self.messages += 1
                        break
                else:
                    exclamations = 0
                if state == "start":
                    if c == MESSAGE_START:
                        state, check = "seq", MESSAGE_START
                elif state == "seq":
                    if self.old and c not in (1, seq):
                        state = "start"
                    else:
                        seq, state, check = c, "size1", check ^ c
                elif state == "size1":
                    length, state, check = c << 8, "size2", check ^ c
                elif state == "size2":
                    length, state, check = length | c, "token", check ^ c
                elif state == "token":
                    if c == TOKEN:
                        state, check, index = "data", check ^ c, 0
                    else:
                        state = "start"
                elif state == "data":
                    self._store(index, c)
                    index = (index + 1) & 0xFFFF  # a 0 length takes 65536 bytes
                    check ^= c
                    if index == length:
                        state = "check"
                elif state == "check":
                    state = self._checked(c == check, seq)
            self.chip.command_begins(self.buffer[0])
            self.answer(seq, self.handle())
            self.chip.command_ends()
            seq = (seq + 1) & 0xFF

    def _checked(self, good: bool, seq: int) -> str:
        """Next parser state after the checksum byte: bad frames are dropped silently."""
        if not good:
            self.log(f"message {seq} with bad checksum dropped")
            return "start"
        self.messages += 1
        if self.messages in self.faults.cksumerr:
            self.log(f"message {self.messages} taken as corrupted (fault)")
            return "start"
        return "process"

    def _store(self, index: int, value: int) -> None:
        if index < BUFFER_SIZE:
            self.buffer[index] = value
        elif index == BUFFER_SIZE:
            self.log(
                "message longer than the 285-byte buffer: the rest is dropped here "
                "(the real firmware overwrites its stack)"
            )

    def answer(self, seq: int, size: int) -> None:
        out = self.faults.answer(self.messages, seq, bytes(self.buffer[:size]))
        for value in out or b"":
            self.putch(value)

    def _reply(self, *values: int) -> int:
        """Put answer bytes after the command ID; return the answer's length."""
        self.buffer[1 : 1 + len(values)] = bytes(values)
        return 1 + len(values)

    def handle(self) -> int:
        """Carry out the command in the buffer, build the answer there; return its
        length."""
        buf = self.buffer
        cmd = buf[0]
        if cmd == CMD_SPI_MULTI:
            if buf[4] == 0x30:
                answer = self.signature[min(buf[6], 2)]
            elif buf[4] & 0x50:
                # Only the first instruction byte is looked at: 50 08 (extended fuse)
                # gives the low fuse, 58 00 (lock) the high fuse.
                answer = {0x50: self.lfuse, 0x58: self.hfuse}.get(buf[4], 0)
            else:
                answer = 0
            # Always 7 bytes, whatever NumRx asked for.
            return self._reply(STATUS_CMD_OK, 0, buf[4], 0, answer, STATUS_CMD_OK)
        if cmd == CMD_SIGN_ON:
            return self._reply(STATUS_CMD_OK, len(SIGN_ON), *SIGN_ON)
        if cmd == CMD_GET_PARAMETER:
            return self._reply(STATUS_CMD_OK, CONFIG_PARAMS.get(buf[1], 0))
        if cmd in (CMD_LEAVE_PROGMODE_ISP, CMD_SET_PARAMETER, CMD_ENTER_PROGMODE_ISP):
            self.leave = self.leave or cmd == CMD_LEAVE_PROGMODE_ISP
            return self._reply(STATUS_CMD_OK)
        if cmd == CMD_READ_SIGNATURE_ISP:
            return self._reply(STATUS_CMD_OK, self.signature[min(buf[4], 2)], STATUS_CMD_OK)
        if cmd == CMD_READ_LOCK_ISP:
            return self._reply(STATUS_CMD_OK, self.lock, STATUS_CMD_OK)
        if cmd == CMD_READ_FUSE_ISP:
            # 50 08 is the extended fuse, 50 anything else the low one, any other
            # first byte the high fuse.
            low_or_ext = self.efuse if buf[3] == 0x08 else self.lfuse
            value = low_or_ext if buf[2] == 0x50 else self.hfuse
            return self._reply(STATUS_CMD_OK, value, STATUS_CMD_OK)
        if cmd == CMD_PROGRAM_LOCK_ISP:
            # SPM programs the boot lock bits that are 0 in the value, never clears one.
            self.memory.lock &= ~(~buf[4] & 0x3C) & 0xFF
            return self._reply(STATUS_CMD_OK, STATUS_CMD_OK)
        if cmd == CMD_CHIP_ERASE_ISP:
            # Erases nothing: only the sequential erase pointer starts again (B3, B4).
            self.erase_address = 0
            return self._reply(STATUS_CMD_OK if self.old else STATUS_CMD_FAILED)
        if cmd == CMD_LOAD_ADDRESS:
            # Word address to byte address in 32 bits: bit 31 falls off the top.
            self.address = (int.from_bytes(buf[1:5], "big") << 1) & 0xFFFFFFFF
            return self._reply(STATUS_CMD_OK)
        if cmd == CMD_PROGRAM_FLASH_ISP:
            self.program_flash()
            return self._reply(STATUS_CMD_OK)
        if cmd == CMD_PROGRAM_EEPROM_ISP:
            self.program_eeprom()
            return self._reply(STATUS_CMD_OK)
        if cmd in (CMD_READ_FLASH_ISP, CMD_READ_EEPROM_ISP):
            return self.read_memory(cmd)
        return self._reply(STATUS_CMD_FAILED)

    # ------------------------------------------------------------------ memories

    def _count(self) -> int:
        return self.buffer[1] << 8 | self.buffer[2]

    def _data(self, i: int) -> int:
        """Byte i of a program command's data: past the buffer, RAM the model reads as 0."""
        return self.buffer[10 + i] if 10 + i < BUFFER_SIZE else 0

    def program_flash(self) -> None:
        mcu, memory = self.chip, self.memory
        # The page erased is the next one in a row from 0, not the one being written.
        if self.erase_address < self.app_end:
            memory.spm_erase(self.erase_address)
            mcu.busy(self.timing.page_erase)
            self.erase_address += memory.page_size
        size = self._count()
        if size % 2:
            self.log(f"odd length {size}: the fill loop never ends")
            mcu.spin()
        start = self.address
        i = 0
        while True:  # do { fill one word } while (size), with a 16-bit size
            memory.spm_fill(self.address, self._data(i), self._data(i + 1))
            self.address = (self.address + 2) & 0xFFFFFFFF
            i += 2
            size = (size - 2) & 0xFFFF
            if size == 0:
                break
        memory.spm_write(start)
        mcu.busy(self.timing.page_write)

    def program_eeprom(self) -> None:
        # The byte address comes back from the doubled one, so writes land right (B5).
        cell = (self.address >> 1) & 0xFFFF
        for i in range(self._count()):
            self.memory.eeprom_write(cell, self._data(i))
            self.chip.busy(self.timing.eeprom_write)
            self.address = (self.address + 2) & 0xFFFFFFFF
            cell = (cell + 1) & 0xFFFF

    def read_memory(self, cmd: int) -> int:
        size = self._count()
        if cmd == CMD_READ_FLASH_ISP and (size % 2 or size == 0):
            self.log(f"read of {size} bytes: the word loop never ends")
            self.chip.spin()
        if size == 0:
            self.log("EEPROM read of 0 bytes: the loop never ends")
            self.chip.spin()
        if size + 3 > BUFFER_SIZE:
            self.log(f"{size}-byte read overflows the buffer (real firmware: stack overwritten)")
            self.buffer.extend(bytes(size + 3 - len(self.buffer)))
        data = bytearray()
        memory = self.memory
        if cmd == CMD_READ_FLASH_ISP:
            for _ in range(size // 2):
                low = memory.read_flash(self.address)
                data += bytes([low, memory.read_flash(self.address + 1)])
                self.address = (self.address + 2) & 0xFFFFFFFF
        else:
            # EEAR gets the doubled address LOAD_ADDRESS left: reads start at 2x (B5).
            for _ in range(size):
                data.append(memory.eeprom_read(self.address & 0xFFFF))
                self.address = (self.address + 1) & 0xFFFFFFFF
        self.buffer[1] = STATUS_CMD_OK
        self.buffer[2 : 2 + size] = data
        self.buffer[2 + size] = STATUS_CMD_OK
        return size + 3

    # ------------------------------------------------------------------ monitor

    def monitor(self) -> None:
        """The "!!!" monitor: texts come from the wrong flash bank (module docstring)."""
        self.monitor_runs += 1
        self.log("'!!!' started the monitor")
        for _ in range(5):
            self.send(b"!" * 25 + CRLF)
        self.print_flash(BANNER_AT, newline=True)
        while True:
            self.print_flash(PROMPT_AT)
            byte = self.chip.receive(None)
            assert byte is not None
            key = byte.value & 0x5F if byte.value >= 0x60 else byte.value
            if key >= 0x20:
                self.send(bytes([key, 0x20]))
            name = chr(key)
            if name in MONITOR_KEYS:
                self.print_flash(MONITOR_KEYS[name] + 2, newline=True)
                if name == "Q":
                    return
                self.log(f"monitor command {name!r} is not modelled: no further output")
            else:
                self.print_flash(HUH_AT, newline=True)

    def send(self, data: bytes) -> None:
        for value in data:
            self.putch(value)

    def print_flash(self, at: int, *, newline: bool = False) -> None:
        """Print bytes from flash at the 16-bit address ``at`` until a 0x00."""
        mcu, flash = self.chip, self.memory.flash
        for count in range(1, 0x10001):
            value = flash[(at + count - 1) & 0xFFFF]
            if value == 0:
                if newline:
                    self.send(CRLF)
                return
            self.putch(value)
            if count % 256 == 0:
                mcu.advance(mcu.now)  # keep pace with the line
        # No 0x00 in the whole bank: the real firmware prints for ever.
        self.log("no 0x00 in the lower 64 KiB: the monitor prints for ever")
        if mcu.throttle == 0:
            mcu.spin()  # unpaced, the output would fill memory; stop here
        while True:
            for value in bytes(flash[:0x10000]):
                self.putch(value)
            mcu.advance(mcu.now)
