"""An STK500v2 ISP programmer on a serial port (STK500 with v2 firmware, serial AVRISP,
clones) with an AVR on its ISP cable.

The firmware is modelled as AVR068 describes the commands (docs/protocols/stk500v2.md
A6, A7 and part C): it parses framed messages, answers a bad checksum with
ANSWER_CKSUM_ERROR, and turns every ISP command into the 4-byte SPI instructions the
host's parameters name. Those bytes go to :class:`flashsh.sims.avr_target.AvrTarget`,
which decodes them, so the instruction bytes, delays and poll settings the host sends
decide what happens, as on the real thing.

SPI transfers take 8 SCK periods a byte at the rate PARAM_SCK_DURATION selects, delays
take their time; both count for the target and, scaled by the throttle, for the host.
A DTR edge does nothing: these programmers do not wire it to anything.
"""

from __future__ import annotations

from flashsh.sims.avr_target import AvrTarget
from flashsh.sims.mcu import Mcu
from flashsh.sims.stk500v2_faults import Stk500v2Faults
from flashsh.sims.stk500v2_frame import (
    ANSWER_CKSUM_ERROR,
    CMD_CHIP_ERASE_ISP,
    CMD_ENTER_PROGMODE_ISP,
    CMD_GET_PARAMETER,
    CMD_LEAVE_PROGMODE_ISP,
    CMD_LOAD_ADDRESS,
    CMD_PROGRAM_EEPROM_ISP,
    CMD_PROGRAM_FLASH_ISP,
    CMD_PROGRAM_FUSE_ISP,
    CMD_PROGRAM_LOCK_ISP,
    CMD_READ_EEPROM_ISP,
    CMD_READ_FLASH_ISP,
    CMD_READ_FUSE_ISP,
    CMD_READ_LOCK_ISP,
    CMD_READ_OSCCAL_ISP,
    CMD_READ_SIGNATURE_ISP,
    CMD_SET_PARAMETER,
    CMD_SIGN_ON,
    CMD_SPI_MULTI,
    MESSAGE_START,
    PARAM_BUILD_NUMBER_HIGH,
    PARAM_BUILD_NUMBER_LOW,
    PARAM_CONTROLLER_INIT,
    PARAM_DATA,
    PARAM_HW_VER,
    PARAM_OSC_CMATCH,
    PARAM_OSC_PSCALE,
    PARAM_RESET_POLARITY,
    PARAM_SCK_DURATION,
    PARAM_STATUS,
    PARAM_SW_MAJOR,
    PARAM_SW_MINOR,
    PARAM_TOPCARD_DETECT,
    PARAM_VADJUST,
    PARAM_VTARGET,
    STATUS_CKSUM_ERROR,
    STATUS_CMD_FAILED,
    STATUS_CMD_OK,
    STATUS_CMD_TOUT,
    STATUS_CMD_UNKNOWN,
    STATUS_RDY_BSY_TOUT,
    TOKEN,
    checksum,
    frame,
)

#: Sign-on strings by programmer kind (docs/protocols/stk500v2.md A6).
SIGN_ON = {"stk500": b"STK500_2", "avrisp": b"AVRISP_2"}
# ISP clock of the STK500/AVRISP (crystal 7.3728 MHz): durations 0..3 are fixed rates,
# above that one SCK period is (d + 10/12) * 24 controller clocks (A5).
CONTROLLER_HZ = 7.3728e6
SCK_FIXED = {0: 1843200.0, 1: 460800.0, 2: 115200.0, 3: 57600.0}
# Largest message body the model takes: a 256-byte page write plus its 10-byte header
# fits, as in avrdude's buffer (A1).
MAX_BODY = 275
# Mode byte of PROGRAM_FLASH/EEPROM_ISP (A7).
MODE_PAGE = 0x01
MODE_WORD_TIMED, MODE_WORD_VALUE, MODE_WORD_RDY = 0x02, 0x04, 0x08
MODE_PAGE_TIMED, MODE_PAGE_VALUE, MODE_PAGE_RDY = 0x10, 0x20, 0x40
MODE_PAGE_WRITE = 0x80
# Instruction bits the firmware sets itself: high byte of a flash word.
FLASH_HIGH_BYTE = 0x08
POLL_RDY_BSY = bytes([0xF0, 0x00, 0x00, 0x00])
LOAD_EXTENDED_ADDRESS = 0x4D
# LOAD_ADDRESS bit 31: flash above 64 K words, send Load Extended Address first.
EXTENDED = 0x80000000


def sck_hz(duration: int, kind: str = "stk500") -> float:
    """SCK frequency for PARAM_SCK_DURATION ``duration``; the serial AVRISP runs at half
    the STK500's rate."""
    f = SCK_FIXED.get(duration) or CONTROLLER_HZ / (24 * (duration + 10 / 12))
    return f / 2 if kind == "avrisp" else f


class IspProgrammer:
    """The programmer's firmware: a message loop over the target's ISP pins."""

    def __init__(
        self,
        target: AvrTarget,
        faults: Stk500v2Faults,
        *,
        kind: str = "stk500",
        sck_duration: int = 2,
        vtarget: float = 5.0,
    ) -> None:
        if kind not in SIGN_ON:
            raise ValueError(f"unknown programmer {kind!r}; valid: {', '.join(SIGN_ON)}")
        self.kind = kind
        self.name = f"{kind} (STK500v2 ISP programmer)"
        self.target = target
        self.faults = faults
        # The model's identity; no particular firmware release is copied.
        self.params: dict[int, int] = {
            PARAM_BUILD_NUMBER_LOW: 0x00,
            PARAM_BUILD_NUMBER_HIGH: 0x00,
            PARAM_HW_VER: 0x02,
            PARAM_SW_MAJOR: 0x02,
            PARAM_SW_MINOR: 0x0A,
            PARAM_VTARGET: round(vtarget * 10),
            PARAM_VADJUST: round(vtarget * 10),
            PARAM_OSC_PSCALE: 0x00,
            PARAM_OSC_CMATCH: 0x00,
            PARAM_SCK_DURATION: sck_duration,
            PARAM_TOPCARD_DETECT: 0xFF,  # no top card
            PARAM_STATUS: 0x00,
            PARAM_DATA: 0x00,
            PARAM_RESET_POLARITY: 0x01,
            PARAM_CONTROLLER_INIT: 0x00,
        }
        self.read_only = {PARAM_BUILD_NUMBER_LOW, PARAM_BUILD_NUMBER_HIGH, PARAM_HW_VER,
                          PARAM_SW_MAJOR, PARAM_SW_MINOR, PARAM_TOPCARD_DETECT}  # fmt: skip
        self.address = 0
        self.messages = 0
        self.progmode = False
        self.poll_limit = 0.2  # s; ENTER_PROGMODE's timeout replaces it
        self.mcu: Mcu | None = None
        self._owed = 0.0  # target time the host has not yet waited for
        self._ext_sent: int | None = None  # extended address byte sent this command
        self._mark = 0.0

    @property
    def chip(self) -> Mcu:
        assert self.mcu is not None, "firmware not running"
        return self.mcu

    def log(self, what: str) -> None:
        self.chip.log(f"programmer: {what}")

    # ------------------------------------------------------------------ main loop

    def run(self, mcu: Mcu) -> None:
        self.mcu = mcu
        mcu.uart_enable()
        self.target.power(self.params[PARAM_VTARGET] / 10)
        self._mark = mcu.now
        while True:
            seq, body, good = self.receive()
            # The target lived through the time between messages too.
            self.target.elapse(max(mcu.now - self._mark, 0.0))
            self._mark = mcu.now
            if not good:
                self.log(f"message {seq} with bad checksum")
                self.send(frame(seq, bytes([ANSWER_CKSUM_ERROR, STATUS_CKSUM_ERROR])))
                continue
            self.messages += 1
            n = self.messages
            mcu.command_begins(body[0])
            if n in self.faults.cksumerr:
                self.send(frame(seq, bytes([ANSWER_CKSUM_ERROR, STATUS_CKSUM_ERROR])))
            else:
                answer = self.dispatch(body)
                mcu.busy(self._owed)
                self._owed = 0.0
                out = self.faults.answer(n, seq, answer)
                if out is not None:
                    self.send(out)
            mcu.command_ends()
            self._mark = mcu.now

    def getch(self) -> int:
        byte = self.chip.receive(None)
        assert byte is not None
        return byte.value

    def receive(self) -> tuple[int, bytes, bool]:
        """Collect one message: (sequence number, body, checksum good)."""
        while True:
            if self.getch() != MESSAGE_START:
                continue
            seq = self.getch()
            size = self.getch() << 8
            size |= self.getch()
            if self.getch() != TOKEN or not 0 < size <= MAX_BODY:
                continue  # not a message start after all: hunt for the next 0x1B
            body = bytes(self.getch() for _ in range(size))
            check = self.getch()
            head = bytes([MESSAGE_START, seq, size >> 8, size & 0xFF, TOKEN])
            return seq, body, checksum(head + body) == check

    def send(self, data: bytes) -> None:
        for value in data:
            self.chip.transmit(value)

    # ------------------------------------------------------------------ target access

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass on the target; the host feels it when the answer goes."""
        self.target.elapse(seconds)
        self._owed += seconds

    @property
    def sck(self) -> float:
        return sck_hz(self.params[PARAM_SCK_DURATION], self.kind)

    def spi(self, data: bytes, byte_delay: float = 0.0) -> bytes:
        out = bytearray()
        period = 8 / self.sck
        for i, value in enumerate(data):
            if i and byte_delay:
                self.wait(byte_delay)
            self.wait(period)
            out.append(self.target.transfer(value, self.sck))
        return bytes(out)

    def _reset_active(self, active: bool) -> None:
        # RESET_POLARITY 1: AVR-style, active low. 0 drives it the other way (AT89), which
        # leaves an AVR running.
        low = active if self.params[PARAM_RESET_POLARITY] else not active
        self.target.set_reset(low)

    def _poll_ready(self) -> bool:
        """Poll RDY/BSY until the target is ready; False on timeout."""
        start = self.target.t
        while self.spi(POLL_RDY_BSY)[3] & 0x01:
            if self.target.t - start > self.poll_limit:
                return False
        return True

    def _poll_value(self, read: bytes, expected: int) -> bool:
        """Read one location until it gives the written value; False on timeout."""
        start = self.target.t
        while self.spi(read)[3] != expected:
            if self.target.t - start > self.poll_limit:
                return False
        return True

    # ------------------------------------------------------------------ commands

    def dispatch(self, body: bytes) -> bytes:
        command = body[0]
        handler = {
            CMD_SIGN_ON: self.sign_on,
            CMD_SET_PARAMETER: self.set_parameter,
            CMD_GET_PARAMETER: self.get_parameter,
            CMD_LOAD_ADDRESS: self.load_address,
            CMD_ENTER_PROGMODE_ISP: self.enter_progmode,
            CMD_LEAVE_PROGMODE_ISP: self.leave_progmode,
            CMD_CHIP_ERASE_ISP: self.chip_erase,
            CMD_PROGRAM_FLASH_ISP: self.program_memory,
            CMD_PROGRAM_EEPROM_ISP: self.program_memory,
            CMD_READ_FLASH_ISP: self.read_memory,
            CMD_READ_EEPROM_ISP: self.read_memory,
            CMD_PROGRAM_FUSE_ISP: self.program_byte,
            CMD_PROGRAM_LOCK_ISP: self.program_byte,
            CMD_READ_FUSE_ISP: self.read_byte,
            CMD_READ_LOCK_ISP: self.read_byte,
            CMD_READ_SIGNATURE_ISP: self.read_byte,
            CMD_READ_OSCCAL_ISP: self.read_byte,
            CMD_SPI_MULTI: self.spi_multi,
        }.get(command)
        if handler is None:
            self.log(f"command 0x{command:02x} not supported")
            return bytes([command, STATUS_CMD_UNKNOWN])
        try:
            return handler(body)
        except IndexError:
            # A body too short for its command: the model refuses it.
            self.log(f"command 0x{command:02x} with a {len(body)}-byte body: too short")
            return bytes([command, STATUS_CMD_FAILED])

    def sign_on(self, body: bytes) -> bytes:
        name = SIGN_ON[self.kind]
        return bytes([body[0], STATUS_CMD_OK, len(name)]) + name

    def get_parameter(self, body: bytes) -> bytes:
        value = self.params.get(body[1])
        if value is None:
            return bytes([body[0], STATUS_CMD_FAILED])
        return bytes([body[0], STATUS_CMD_OK, value])

    def set_parameter(self, body: bytes) -> bytes:
        param, value = body[1], body[2]
        if param not in self.params or param in self.read_only:
            return bytes([body[0], STATUS_CMD_FAILED])
        self.params[param] = value
        if param == PARAM_VTARGET:
            self.target.power(value / 10)
            self.log(f"target supply {value / 10:.1f} V")
        elif param == PARAM_SCK_DURATION:
            self.log(f"SCK {self.sck / 1000:.1f} kHz")
        return bytes([body[0], STATUS_CMD_OK])

    def load_address(self, body: bytes) -> bytes:
        if len(body) < 5:
            raise IndexError
        self.address = int.from_bytes(body[1:5], "big")
        return bytes([body[0], STATUS_CMD_OK])

    def enter_progmode(self, body: bytes) -> bytes:
        timeout, stab, cmdexe, loops, byte_delay, poll_value, poll_index = body[1:8]
        instruction = body[8:12]
        if len(instruction) < 4:
            raise IndexError
        self.poll_limit = timeout / 1000 if timeout else self.poll_limit
        # SCK low, a positive pulse on RESET, then hold it for programming.
        self._reset_active(False)
        self._reset_active(True)
        self.wait(stab / 1000)
        for _ in range(loops):
            out = self.spi(instruction, byte_delay / 1000)
            if poll_index == 0 or (poll_index <= 4 and out[poll_index - 1] == poll_value):
                self.wait(cmdexe / 1000)
                self.progmode = True
                return bytes([body[0], STATUS_CMD_OK])
        why = self.target.isp_blocked()
        self.log("no answer to Programming Enable" + (f": {why}" if why else ""))
        return bytes([body[0], STATUS_CMD_FAILED])

    def leave_progmode(self, body: bytes) -> bytes:
        pre, post = body[1], body[2]
        self.wait(pre / 1000)
        self._reset_active(False)
        self.wait(post / 1000)
        self.progmode = False
        return bytes([body[0], STATUS_CMD_OK])

    def chip_erase(self, body: bytes) -> bytes:
        delay, method, instruction = body[1], body[2], body[3:7]
        if len(instruction) < 4:
            raise IndexError
        self.spi(instruction)
        if method == 0:
            self.wait(delay / 1000)
        elif not self._poll_ready():
            return bytes([body[0], STATUS_RDY_BSY_TOUT])
        return bytes([body[0], STATUS_CMD_OK])

    # -- memories ---------------------------------------------------------------

    def _extended(self, word: int) -> None:
        """With LOAD_ADDRESS bit 31 set, issue Load Extended Address before the first
        flash instruction of a command and whenever the 64 K-word bank changes."""
        if not self.address & EXTENDED:
            return
        ext = (word >> 16) & 0xFF
        if ext != self._ext_sent:
            self.spi(bytes([LOAD_EXTENDED_ADDRESS, 0x00, ext, 0x00]))
            self._ext_sent = ext

    def _next_address(self) -> None:
        self.address = (self.address & EXTENDED) | ((self.address + 1) & 0x7FFFFFFF)

    def _instruction(self, op: int, index: int, flash: bool, value: int) -> bytes:
        word = self.address & 0x7FFFFFFF
        if flash:
            self._extended(word)
            if index % 2:
                op |= FLASH_HIGH_BYTE
        return bytes([op, (word >> 8) & 0xFF, word & 0xFF, value])

    def program_memory(self, body: bytes) -> bytes:
        flash = body[0] == CMD_PROGRAM_FLASH_ISP
        count = body[1] << 8 | body[2]
        mode, delay, cmd1, cmd2, cmd3, poll1, poll2 = body[3:10]
        data = body[10 : 10 + count]
        if len(data) < count:
            self.log(f"program command announces {count} bytes, carries {len(data)}")
            return bytes([body[0], STATUS_CMD_FAILED])
        self._ext_sent = None
        status = STATUS_CMD_OK
        if mode & MODE_PAGE:
            start = self.address & 0x7FFFFFFF
            polls: list[tuple[bytes, int]] = []
            for i, value in enumerate(data):
                self.spi(self._instruction(cmd1, i, flash, value))
                if value not in (poll1, poll2) and not polls:
                    polls.append((self._instruction(cmd3, i, flash, 0), value))
                if not flash or i % 2:
                    self._next_address()
            if mode & MODE_PAGE_WRITE:
                if flash:
                    self._extended(start)  # the page's own bank
                self.spi(bytes([cmd2, (start >> 8) & 0xFF, start & 0xFF, 0x00]))
                status = self._wait_written(mode >> 4 & 0x07, delay, polls[0] if polls else None)
            return bytes([body[0], status])
        for i, value in enumerate(data):
            self.spi(self._instruction(cmd1, i, flash, value))
            read = self._instruction(cmd3, i, flash, 0)
            poll = None if value in (poll1, poll2) else (read, value)
            status = self._wait_written(mode >> 1 & 0x07, delay, poll)
            if status != STATUS_CMD_OK:
                break
            if not flash or i % 2:
                self._next_address()
        return bytes([body[0], status])

    def _wait_written(self, how: int, delay: int, poll: tuple[bytes, int] | None) -> int:
        """Wait for a write the way mode bits ``how`` say: 1 timed, 2 value polling (timed
        when no written value can be polled), 4 RDY/BSY polling."""
        if how & 0x04:
            return STATUS_CMD_OK if self._poll_ready() else STATUS_RDY_BSY_TOUT
        if how & 0x02 and poll is not None:
            return STATUS_CMD_OK if self._poll_value(*poll) else STATUS_CMD_TOUT
        if how & 0x03:
            self.wait(delay / 1000)
        return STATUS_CMD_OK

    def read_memory(self, body: bytes) -> bytes:
        flash = body[0] == CMD_READ_FLASH_ISP
        count = body[1] << 8 | body[2]
        cmd1 = body[3]
        if count > MAX_BODY - 3:
            return bytes([body[0], STATUS_CMD_FAILED])
        self._ext_sent = None
        data = bytearray()
        for i in range(count):
            data.append(self.spi(self._instruction(cmd1, i, flash, 0))[3])
            if not flash or i % 2:
                self._next_address()
        return bytes([body[0], STATUS_CMD_OK]) + bytes(data) + bytes([STATUS_CMD_OK])

    # -- single bytes -----------------------------------------------------------

    def program_byte(self, body: bytes) -> bytes:
        instruction = body[1:5]
        if len(instruction) < 4:
            raise IndexError
        # No read-back: both status bytes are always OK (A7).
        self.spi(instruction)
        return bytes([body[0], STATUS_CMD_OK, STATUS_CMD_OK])

    def read_byte(self, body: bytes) -> bytes:
        ret_addr, instruction = body[1], body[2:6]
        if len(instruction) < 4:
            raise IndexError
        out = self.spi(instruction)
        value = out[ret_addr - 1] if 1 <= ret_addr <= 4 else 0x00
        return bytes([body[0], STATUS_CMD_OK, value, STATUS_CMD_OK])

    def spi_multi(self, body: bytes) -> bytes:
        num_tx, num_rx, rx_start = body[1], body[2], body[3]
        tx = body[4 : 4 + num_tx]
        if len(tx) < num_tx:
            raise IndexError
        # Past the bytes to send the firmware clocks out zeros to collect the answer.
        total = max(num_tx, rx_start + num_rx)
        out = self.spi(tx + bytes(total - num_tx))
        rx = out[rx_start : rx_start + num_rx]
        return bytes([body[0], STATUS_CMD_OK]) + rx + bytes([STATUS_CMD_OK])
