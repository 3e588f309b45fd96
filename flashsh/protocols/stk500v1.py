"""STK500 version 1 (Atmel AVR061) as the Arduino bootloaders speak it.

Covers optiboot (Uno, Nano, Melzi/Sanguino ATmega1284P) and ATmegaBOOT_168 (Diecimila,
Duemilanove, Mega 1280). What each bootloader really implements differs from AVR061 in
ways that matter: no chip erase, no fuse access, EEPROM only on ATmegaBOOT, addresses in
words. Facts and sources: docs/protocols/stk500v1.md.
"""

from __future__ import annotations

import time

from flashsh import chips
from flashsh.errors import NoAnswerError, ProtocolError, TargetError, UnsupportedError
from flashsh.numbers import hexaddr
from flashsh.protocols.base import Bootloader, Capability, MemoryMap, Region, TargetInfo
from flashsh.transports.base import ByteLink

# AVR061 constants, names as in the application note.
STK_OK = 0x10
STK_FAILED = 0x11
STK_UNKNOWN = 0x12
STK_INSYNC = 0x14
STK_NOSYNC = 0x15
CRC_EOP = 0x20

STK_GET_SYNC = 0x30
STK_GET_SIGN_ON = 0x31
STK_GET_PARAMETER = 0x41
STK_SET_DEVICE = 0x42
STK_SET_DEVICE_EXT = 0x45
STK_ENTER_PROGMODE = 0x50
STK_LEAVE_PROGMODE = 0x51
STK_LOAD_ADDRESS = 0x55
STK_UNIVERSAL = 0x56
STK_PROG_PAGE = 0x64
STK_READ_PAGE = 0x74
STK_READ_SIGN = 0x75

PARM_SW_MAJOR = 0x81
PARM_SW_MINOR = 0x82

# ISP "Load Extended Address" that optiboot >= 7 accepts through UNIVERSAL (RAMPZ parts).
LOAD_EXTENDED_ADDRESS = 0x4D

MEMTYPE = {"flash": ord("F"), "eeprom": ord("E")}

# Largest block AVR061 allows in one PROG_PAGE / READ_PAGE.
MAX_BLOCK = 256
# EEPROM moves in 16-byte blocks, as avrdude does for bootloaders; must stay even because
# the bootloaders double every loaded address.
EEPROM_BLOCK = 16

SYNC_TIMEOUT = 0.25
# Long enough for optiboot 4.4's start-up LED flashes (3 flashes, about 0.4 s at 16 MHz).
FIRST_SYNC_TIMEOUT = 0.6
REPLY_TIMEOUT = 1.0
SYNC_ATTEMPTS = 6
TRANSFER_ATTEMPTS = 3
OPEN_SETTLE = 0.1


class Stk500v1(Bootloader):
    """An Arduino serial bootloader speaking STK500v1."""

    name = "stk500v1"
    baudrates = (115200, 57600)

    def __init__(self, link: ByteLink, chip: str | None = None) -> None:
        super().__init__(link)
        self.chip_override = chip
        self.part: chips.AvrPart | None = None
        self.flavour = "unknown"
        self.version = (0, 0)
        self.sign_on = b""
        self.how = ""
        self._extended_sent: int | None = None
        self.capabilities = (
            Capability.READ
            | Capability.WRITE
            | Capability.PAGE_ERASE_ON_WRITE
            | Capability.KEEP_ALIVE
        )

    # ---------------------------------------------------------------- wire level

    def _exchange(self, request: bytes, reply_len: int, timeout: float = REPLY_TIMEOUT) -> bytes:
        """Send one command (terminator added) and return the data between INSYNC and OK."""
        self.link.write(request + bytes([CRC_EOP]))
        return self._reply(request[0], reply_len, timeout)

    def _reply(self, command: int, reply_len: int, timeout: float) -> bytes:
        raw = self._read_exact(reply_len + 2, timeout, command)
        if raw[0] != STK_INSYNC:
            if raw[0] == STK_NOSYNC:
                raise ProtocolError(
                    f"bootloader lost sync on command 0x{command:02x}",
                    "a byte was lost on the line; run the command again",
                )
            raise ProtocolError(
                f"unexpected reply 0x{raw[0]:02x} to command 0x{command:02x}",
                "is this really an STK500v1 bootloader? try --protocol",
            )
        if raw[-1] != STK_OK:
            what = "failed" if raw[-1] == STK_FAILED else f"ended with 0x{raw[-1]:02x}"
            raise ProtocolError(f"command 0x{command:02x} {what}")
        return raw[1:-1]

    def _read_exact(self, size: int, timeout: float, command: int) -> bytes:
        deadline = time.monotonic() + timeout
        data = b""
        while len(data) < size:
            left = deadline - time.monotonic()
            chunk = self.link.read(size - len(data), max(left, 0.0)) if left > 0 else b""
            if not chunk:
                if not data:
                    raise NoAnswerError(
                        f"no answer from the bootloader to command 0x{command:02x}",
                        "it may have timed out and started the application; "
                        "`connect` again or press reset",
                    )
                raise ProtocolError(
                    f"short reply to command 0x{command:02x}: {len(data)} of {size} bytes",
                    "a byte was lost on the line; try a lower --baud",
                )
            data += chunk
        return data

    def _sync(self, attempts: int, reset: bool) -> bool:
        """GET_SYNC until the bootloader answers, then make sure the answer was not a stray.

        Never send a new GET_SYNC while an earlier one may still sit unread in the chip:
        optiboot 4.4 does not read the UART while it flashes its LED after reset (about
        0.4 s), its receiver holds only three bytes, and an overrun leaves it reading a
        command byte where it expects the 0x20 terminator, which makes it start the
        application. So the first wait covers the LED time, and a success is confirmed
        with one more GET_SYNC once the line is quiet.
        """
        for attempt in range(attempts):
            if reset and attempt > 0:
                self.link.pulse_reset(discharge=0.0, settle=0.02)
            self.link.discard_input()
            self.link.write(bytes([STK_GET_SYNC, CRC_EOP]))
            wait = FIRST_SYNC_TIMEOUT if attempt == 0 else SYNC_TIMEOUT
            reply = self.link.read(2, wait)
            if reply == bytes([STK_INSYNC, STK_OK]):
                # Answers to line noise or earlier attempts may still be on their way.
                self.link.drain(quiet=0.05, limit=0.5)
                self.link.write(bytes([STK_GET_SYNC, CRC_EOP]))
                confirm = self.link.read(2, SYNC_TIMEOUT)
                if confirm == bytes([STK_INSYNC, STK_OK]) and not self.link.read(1, 0.03):
                    return True
        return False

    # ---------------------------------------------------------------- connection

    @classmethod
    def probe(cls, link: ByteLink, *, reset: bool, chip: str | None = None) -> Stk500v1 | None:
        """Reset the board (if asked and possible) and look for GET_SYNC answers.

        Non-destructive: only GET_SYNC is sent until the bootloader has answered.
        """
        self = cls(link, chip)
        did_reset = link.pulse_reset() if reset else False
        if not did_reset:
            # Opening a port asserts DTR on most systems, which resets an Arduino anyway;
            # bytes sent before its bootloader runs are lost.
            time.sleep(OPEN_SETTLE)
        link.drain(quiet=0.03, limit=0.3)
        if not self._sync(SYNC_ATTEMPTS, reset=did_reset):
            return None
        self.how = f"GET_SYNC answered at {link.baudrate} baud after " + (
            "a DTR/RTS reset pulse" if did_reset else "no reset (no modem lines or --no-reset)"
        )
        self._initialise()
        return self

    def _initialise(self) -> None:
        self.version = (
            self._exchange(bytes([STK_GET_PARAMETER, PARM_SW_MAJOR]), 1)[0],
            self._exchange(bytes([STK_GET_PARAMETER, PARM_SW_MINOR]), 1)[0],
        )
        self.sign_on = self._read_sign_on()
        if self.sign_on.startswith(b"AVR ISP") or self.version[0] == 1:
            self.flavour = "atmegaboot"
            self.capabilities |= Capability.EEPROM
        else:
            self.flavour = "optiboot"
        signature = self._exchange(bytes([STK_READ_SIGN]), 3)
        self.signature = signature
        if self.chip_override:
            self.part = chips.avr_part(self.chip_override)
        else:
            self.part = chips.avr_part_by_signature(signature)
        # SET_DEVICE / SET_DEVICE_EXT / ENTER_PROGMODE: the bootloaders ignore the contents,
        # but sending them keeps flashsh compatible with ISP-style STK500v1 firmware.
        self._exchange(self._set_device_payload(self.part), 0)
        self._exchange(
            bytes(
                [
                    STK_SET_DEVICE_EXT,
                    5,
                    self.part.eeprom_page,
                    self.part.pagel,
                    self.part.bs2,
                    1 if self.part.reset_shared_io else 0,
                ]
            ),
            0,
        )
        self._exchange(bytes([STK_ENTER_PROGMODE]), 0)

    def _read_sign_on(self) -> bytes:
        # optiboot answers INSYNC OK with no text; ATmegaBOOT sends "AVR ISP" between them.
        self.link.write(bytes([STK_GET_SIGN_ON, CRC_EOP]))
        raw = self._read_exact(2, REPLY_TIMEOUT, STK_GET_SIGN_ON)
        if raw == bytes([STK_INSYNC, STK_OK]):
            return b""
        raw += self.link.read(7, 0.1)
        if raw[0] != STK_INSYNC or raw[-1] != STK_OK:
            raise ProtocolError("garbled sign-on reply", "try a lower --baud")
        return raw[1:-1]

    @staticmethod
    def _set_device_payload(part: chips.AvrPart) -> bytes:
        return bytes(
            [
                STK_SET_DEVICE,
                part.stk500_devcode,
                0,
                0,
                1,
                1,
                1,
                1,
                3,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
                part.flash_page >> 8,
                part.flash_page & 0xFF,
                part.eeprom_size >> 8,
                part.eeprom_size & 0xFF,
                *part.flash_size.to_bytes(4, "big"),
            ]
        )

    # ---------------------------------------------------------------- facts

    @property
    def chip(self) -> chips.AvrPart:
        if self.part is None:
            raise ProtocolError("not connected")
        return self.part

    def bootloader_name(self) -> str:
        major, minor = self.version
        if self.flavour == "atmegaboot":
            return f"ATmegaBOOT (STK500v1, version {major}.{minor})"
        return f"optiboot {major}.{minor}"

    def bootloader_size(self) -> int:
        facts = chips.bootloader_facts()[self.flavour]
        if "boot_size_by_part" in facts and self.chip.key in facts["boot_size_by_part"]:
            return int(facts["boot_size_by_part"][self.chip.key])
        by_page = facts.get("boot_size_by_page", {})
        return int(by_page.get(str(self.chip.flash_page), self.chip.boot_sizes[-1]))

    def identify(self) -> TargetInfo:
        boot = self.bootloader_size()
        details: dict[str, object] = {
            "signature": self.signature.hex(" ").upper(),
            "bootloader_version": f"{self.version[0]}.{self.version[1]}",
            "bootloader_size": boot,
            "flash_size": self.chip.flash_size,
            "page_size": self.chip.flash_page,
            "eeprom": "yes"
            if Capability.EEPROM in self.capabilities
            else "no (optiboot builds here have no EEPROM support)",
            "chip_erase": "no (each page is erased as it is written)",
            "fuses": "not readable through this bootloader (use an ISP programmer)",
        }
        if self.sign_on:
            details["sign_on"] = self.sign_on.decode("ascii", "replace")
        if self.chip_override:
            details["chip_from"] = "--chip (signature not checked)"
        return TargetInfo(
            protocol=self.name,
            bootloader=self.bootloader_name(),
            chip=self.chip.name,
            link=self.link.description,
            baudrate=self.link.baudrate,
            how=self.how,
            details=details,
        )

    def memory_map(self) -> MemoryMap:
        part = self.chip
        boot = self.bootloader_size()
        regions = [Region("flash", 0, part.flash_size, part.flash_page, part.flash_page, "rw", 0)]
        if Capability.EEPROM in self.capabilities:
            regions.append(
                Region("eeprom", 0, part.eeprom_size, EEPROM_BLOCK, EEPROM_BLOCK, "rw", 1)
            )
        return MemoryMap(
            tuple(regions), bootloader=(part.flash_size - boot, part.flash_size), app_start=0
        )

    # ---------------------------------------------------------------- memory access

    def _address_commands(self, region: Region, address: int) -> list[tuple[bytes, int]]:
        """LOAD_ADDRESS (and, past 64 K words, the extended byte) for a byte address, as
        (command bytes, reply length) pairs. Both bootloaders double every loaded address,
        EEPROM included, so the word address is sent for either memory."""
        if address % 2:
            raise TargetError(
                f"{region.name} address {hexaddr(address)} is odd",
                "the bootloader takes word addresses; start at an even address",
            )
        word = address // 2
        commands = []
        if region.name == "flash" and self.chip.needs_extended_address:
            extended = word >> 16
            if extended != self._extended_sent:
                load_ext = bytes([STK_UNIVERSAL, LOAD_EXTENDED_ADDRESS, 0, extended, 0, CRC_EOP])
                commands.append((load_ext, 1))
                self._extended_sent = extended
        commands.append((bytes([STK_LOAD_ADDRESS, word & 0xFF, (word >> 8) & 0xFF, CRC_EOP]), 0))
        return commands

    def _after_block(self, region: Region, address: int, length: int) -> None:
        # optiboot's auto-increment may carry into RAMPZ at a 64 K-word boundary: forget
        # which extended byte the chip holds so the next block sends it again.
        if region.name == "flash" and (address + length) % 0x20000 == 0:
            self._extended_sent = None

    def _transfer(
        self, region: Region, address: int, command: bytes, reply_len: int, timeout: float
    ) -> bytes:
        """One block transfer, retried after a line error.

        Every block is self-contained (its own LOAD_ADDRESS) and writing a page twice leaves
        the same page, so after a lost, garbled or NOSYNC reply flashsh gets back in step
        and sends the block again rather than give up on a long transfer.
        """
        for attempt in range(TRANSFER_ATTEMPTS):
            try:
                return self._transfer_once(region, address, command, reply_len, timeout)
            except ProtocolError:
                if attempt == TRANSFER_ATTEMPTS - 1:
                    raise
                self._resynchronise()
        raise AssertionError("unreachable")

    def _resynchronise(self) -> None:
        """Get back in step after a line error: GET_SYNC first; if the bootloader has
        given up (it starts the application on garbage), reset it and start over."""
        self._extended_sent = None
        self.link.drain(quiet=0.05, limit=1.0)
        if self._sync(2, reset=False):
            return
        self.reconnect()

    def _transfer_once(
        self, region: Region, address: int, command: bytes, reply_len: int, timeout: float
    ) -> bytes:
        """Send the address commands and ``command`` in one write, then read every reply.

        Each bootloader finishes LOAD_ADDRESS and its two-byte reply long before the next
        command's bytes are due, so this saves a round trip per block; nothing is ever sent
        while the chip is busy writing a page.
        """
        prefix = self._address_commands(region, address)
        self.link.write(b"".join(cmd for cmd, _ in prefix) + command)
        for cmd, length in prefix:
            self._reply(cmd[0], length, REPLY_TIMEOUT)
        result = self._reply(command[0], reply_len, timeout)
        self._after_block(region, address, reply_len or len(command) - 5)
        return result

    def _block_timeout(self, length: int) -> float:
        wire = (length + 16) * 10 / max(self.link.baudrate, 1200)
        return REPLY_TIMEOUT + 2 * wire

    def read(self, region: Region, address: int, length: int) -> bytes:
        memtype = self._memtype(region)
        out = bytearray()
        while length > 0:
            block = min(length, region.page_size, MAX_BLOCK)
            command = bytes([STK_READ_PAGE, block >> 8, block & 0xFF, memtype, CRC_EOP])
            out += self._transfer(region, address, command, block, self._block_timeout(block))
            address += block
            length -= block
        return bytes(out)

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        memtype = self._memtype(region)
        if len(data) > MAX_BLOCK or address % region.page_size:
            raise TargetError(f"unaligned write at {hexaddr(address)}")
        command = bytes([STK_PROG_PAGE, len(data) >> 8, len(data) & 0xFF, memtype])
        self._transfer(
            region, address, command + data + bytes([CRC_EOP]), 0, self._block_timeout(len(data))
        )

    def _memtype(self, region: Region) -> int:
        if region.name == "eeprom" and Capability.EEPROM not in self.capabilities:
            # optiboot 4.4 would write EEPROM data over flash; never send it.
            raise UnsupportedError(
                f"{self.bootloader_name()} cannot access EEPROM",
                "use an ISP programmer for EEPROM",
            )
        return MEMTYPE[region.name]

    # ---------------------------------------------------------------- session

    def keep_alive(self) -> None:
        self._exchange(bytes([STK_GET_SYNC]), 0, timeout=0.3)

    def reconnect(self) -> None:
        did_reset = self.link.pulse_reset()
        self.link.drain(quiet=0.03, limit=0.3)
        if not self._sync(SYNC_ATTEMPTS, reset=did_reset):
            hint = (
                "press the board's reset button, then run the command again"
                if not did_reset
                else "check the cable; `connect` again"
            )
            raise NoAnswerError("the bootloader is no longer answering", hint)
        self._extended_sent = None
        self._initialise()

    def start_application(self) -> None:
        self._exchange(bytes([STK_LEAVE_PROGMODE]), 0)
