"""STK500 protocol version 2 (Atmel AVR068): the Mega 2560 bootloader and ISP programmers.

Two very different things sign on the same way ("AVRISP_2"): Arduino's stk500v2 bootloader
(Mega 2560, avrdude -cwiring) and a real ISP programmer (STK500, AVRISP, clones; avrdude
-cstk500v2 / -cavrispv2) that programs a target over SPI. The bootloader answers
CMD_GET_PARAMETER with its compiled-in hardware version 0x0F, which tells them apart.
The message layer is in stk500v2_wire, memory access in stk500v2_wiring (bootloader) and
stk500v2_isp (programmer). Facts and sources: /work/shared/protocols/stk500v2.md.
"""

from __future__ import annotations

import contextlib

from flashsh import chips
from flashsh.chips.isp import isp_defaults, isp_part
from flashsh.errors import FlashshError, NoAnswerError, ProtocolError, TargetError, UnsupportedError
from flashsh.numbers import hexaddr
from flashsh.protocols.base import Bootloader, Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.stk500v2_isp import IspProgrammer, enter_progmode_body, hz_text, read_byte
from flashsh.protocols.stk500v2_wire import (
    CMD_GET_PARAMETER,
    CMD_LEAVE_PROGMODE_ISP,
    CMD_READ_FUSE_ISP,
    CMD_READ_LOCK_ISP,
    CMD_READ_SIGNATURE_ISP,
    CMD_SIGN_ON,
    PARAM_HW_VER,
    PARAM_SW_MAJOR,
    PARAM_SW_MINOR,
    CommandFailed,
    MessageError,
    MessageLink,
    MonitorError,
    NotStk500v2Error,
)
from flashsh.protocols.stk500v2_wiring import EEPROM_CHUNK, WiringMemory
from flashsh.transports.base import ByteLink

#: avrdude >= 7.3 waits 200 ms for a sign-on answer; the bootloader answers within 1 ms.
SIGN_ON_TIMEOUT = 0.2
SIGN_ON_ATTEMPTS = 5
#: EEPROM moves in blocks of this size; the chip's own EEPROM page is smaller.
EEPROM_BLOCK = EEPROM_CHUNK
BLANK_SIGNATURES = (b"\x00\x00\x00", b"\xff\xff\xff")
FUSES = ("lfuse", "hfuse", "efuse")


class Stk500v2(Bootloader):
    """The stk500v2 bootloader or an ISP programmer; ``mode`` says which."""

    name = "stk500v2"
    baudrates = (115200,)

    def __init__(self, link: ByteLink, chip: str | None = None) -> None:
        super().__init__(link)
        self.wire = MessageLink(link)
        self.chip_override = chip
        self.mode = "unknown"  # "bootloader" or "isp"
        self.sign_on = ""
        self.hw_ver: int | None = None
        self.sw_version: tuple[int, int] | None = None
        self.part: chips.AvrPart | None = None
        self.signature = b""
        self.calibration: int | None = None
        self.how = ""
        self.boot: WiringMemory | None = None
        self.isp: IspProgrammer | None = None

    # ---------------------------------------------------------------- connection

    @classmethod
    def probe(cls, link: ByteLink, *, reset: bool, chip: str | None = None) -> Stk500v2 | None:
        """Sign on, first without a reset (a programmer, or a bootloader an earlier probe
        kept awake), then after a DTR/RTS reset pulse. Only CMD_SIGN_ON is sent until
        something answers it."""
        self = cls(link, chip)
        how = self._connect(reset)
        if how is None:
            return None
        self.how = f"CMD_SIGN_ON answered at {link.baudrate} baud {how}"
        self._initialise()
        return self

    def _connect(self, reset: bool, *, reset_first: bool = False) -> str | None:
        """Sign on; return how it worked, or None. ``reset_first`` skips the attempt
        without a reset (the board is known to run its application)."""
        self.link.drain(quiet=0.03, limit=0.3)
        monitor: MonitorError | None = None
        if not (reset and reset_first):
            try:
                if self._sign_on(2):
                    return "without a reset"
            except MonitorError as exc:
                monitor = exc
        if reset:
            did_reset = self.link.pulse_reset()
            # Without modem lines, the user may have pressed the reset button meanwhile.
            if did_reset or reset_first:
                self.link.drain(quiet=0.03, limit=0.3)
                with contextlib.suppress(MonitorError):
                    if self._sign_on(SIGN_ON_ATTEMPTS):
                        return "after a DTR/RTS reset pulse" if did_reset else "without a reset"
        if monitor is not None:
            raise monitor
        return None

    def _sign_on(self, attempts: int) -> bool:
        """CMD_SIGN_ON until a well-formed answer; False if none came."""
        for _ in range(attempts):
            try:
                answer = self.wire.command(bytes([CMD_SIGN_ON]), SIGN_ON_TIMEOUT, retries=0)
            except MonitorError:
                # 'Q' leaves the monitor (into the application); a reset brings it back.
                self.link.write(b"Q")
                raise
            except NotStk500v2Error:
                return False
            except (MessageError, NoAnswerError, CommandFailed):
                self.wire.resync()
                continue
            if len(answer) >= 3 and len(answer) == 3 + answer[2]:
                self.sign_on = answer[3:].decode("ascii", "replace")
                # Extra sign-on answers may still be on their way: drop them.
                self.link.drain(quiet=0.03, limit=0.3)
                return True
            return False
        return False

    def _initialise(self) -> None:
        self.hw_ver = self.wire.parameter(PARAM_HW_VER)
        major, minor = self.wire.parameter(PARAM_SW_MAJOR), self.wire.parameter(PARAM_SW_MINOR)
        self.sw_version = (major, minor) if major is not None and minor is not None else None
        facts = chips.bootloader_facts()["stk500v2"]
        if self.sign_on == facts["sign_on"] and self.hw_ver == facts["hw_ver"]:
            self._initialise_bootloader()
        else:
            self._initialise_isp()

    def _initialise_bootloader(self) -> None:
        self.mode = "bootloader"
        self.wire.avoid_monitor = True
        self.capabilities = (
            Capability.READ
            | Capability.WRITE
            | Capability.PAGE_ERASE_ON_WRITE
            | Capability.EEPROM
            | Capability.KEEP_ALIVE
        )
        # The bootloader ignores the parameters but expects the command, as avrdude sends it.
        defaults = isp_defaults()
        self.wire.command(enter_progmode_body(defaults.enter_progmode))
        self.signature = bytes(
            read_byte(self.wire, CMD_READ_SIGNATURE_ISP, defaults.signature_instruction(i))
            for i in range(3)
        )
        self.part = self._identify_part()
        boot, unerased = self._boot_facts()
        self.boot = WiringMemory(
            self.wire,
            self.part,
            isp_part(self.part.key),
            self.part.flash_size - boot - unerased,
            self.link.baudrate,
        )

    def _initialise_isp(self) -> None:
        self.mode = "isp"
        self.wire.avoid_monitor = False
        self.capabilities = (
            Capability.READ
            | Capability.WRITE
            | Capability.CHIP_ERASE
            | Capability.EEPROM
            | Capability.FUSES
            | Capability.SIGNATURE_FROM_SILICON
        )
        isp = self.isp = IspProgrammer(self.wire, self.sign_on)
        if self.chip_override:
            isp.part = isp_part(chips.avr_part(self.chip_override).key)
        isp.configure()
        isp.enter()
        try:
            self.signature = isp.signature()
            if self.signature in BLANK_SIGNATURES:
                raise TargetError(
                    f"the target chip does not answer over ISP (signature "
                    f"{self.signature.hex(' ').upper()})",
                    "check the ISP cable and the target's power and clock",
                )
            self.part = self._identify_part()
        except FlashshError:
            with contextlib.suppress(FlashshError):
                isp.leave()
            raise
        isp.part = isp_part(self.part.key)
        isp.eeprom_page = self.part.eeprom_page
        self.calibration = isp.calibration()

    def _identify_part(self) -> chips.AvrPart:
        if self.chip_override:
            return chips.avr_part(self.chip_override)
        return chips.avr_part_by_signature(self.signature)

    def _boot_facts(self) -> tuple[int, int]:
        """(bootloader size, size of the never-erased area below it) for this part."""
        facts = chips.bootloader_facts()["stk500v2"]
        part = self.chip
        boot = int(facts["boot_size_by_part"].get(part.key, part.boot_sizes[-1]))
        # stk500boot.c stops erasing one boot size below the bootloader on every build.
        unerased = int(facts["unerased_below_boot_by_part"].get(part.key, boot))
        return boot, unerased

    # ---------------------------------------------------------------- facts

    @property
    def chip(self) -> chips.AvrPart:
        if self.part is None:
            raise ProtocolError("not connected")
        return self.part

    def _versions(self) -> str:
        if self.sw_version is None:
            return "unknown"
        return f"{self.sw_version[0]}.{self.sw_version[1]:02d}"

    def identify(self) -> TargetInfo:
        part = self.chip
        details: dict[str, object] = {"sign_on": self.sign_on}
        if self.mode == "bootloader":
            boot, unerased = self._boot_facts()
            bootloader = f"Arduino stk500v2 bootloader (firmware {self._versions()})"
            details |= {
                "told_apart_by": f"hardware version 0x{self.hw_ver:02x}, which a real AVRISP "
                "does not report",
                "signature": f"{self.signature.hex(' ').upper()} (compiled into the bootloader)",
                "bootloader_size": boot,
                "flash_size": part.flash_size,
                "page_size": part.flash_page,
                "eeprom": "yes",
                "chip_erase": "no (pages are erased as they are written, in order from 0)",
                "never_erased": f"{hexaddr(part.flash_size - boot - unerased)}-"
                f"{hexaddr(part.flash_size - boot - 1)} (only blank pages there can be written)",
                "fuses": "readable (the chip's real values); not writable through a bootloader",
            }
        else:
            isp = self.isp
            assert isp is not None
            hw = f"0x{self.hw_ver:02x}" if self.hw_ver is not None else "unknown"
            bootloader = f"ISP programmer {self.sign_on} (firmware {self._versions()})"
            details |= {
                "programmer_hardware": hw,
                "programmer_firmware": self._versions(),
                "vtarget": f"{isp.vtarget:.1f} V" if isp.vtarget is not None else "not reported",
                "isp_clock": self._sck_text(),
                "signature": f"{self.signature.hex(' ').upper()} (read from the chip)",
                "flash_size": part.flash_size,
                "page_size": part.flash_page,
                "eeprom_size": part.eeprom_size,
                "chip_erase": f"yes ({isp.part.chip_erase_ms} ms; erases flash, EEPROM unless "
                "EESAVE, and lock bits)",
                "fuses": "readable and writable",
            }
            if self.calibration is not None:
                details["calibration"] = f"0x{self.calibration:02x}"
        if self.chip_override:
            details["chip_from"] = "--chip (signature not checked)"
        return TargetInfo(
            protocol=self.name,
            bootloader=bootloader,
            chip=part.name,
            link=self.link.description,
            baudrate=self.link.baudrate,
            how=self.how,
            details=details,
        )

    def _sck_text(self) -> str:
        isp = self.isp
        if isp is None or isp.sck is None:
            return "not reported"
        text = f"{hz_text(isp.sck_hz)} (SCK duration {isp.sck})"
        return f"{text}, {isp.sck_note}" if isp.sck_note else text

    def memory_map(self) -> MemoryMap:
        part = self.chip
        regions = (
            Region("flash", 0, part.flash_size, part.flash_page, part.flash_page, "rw", 0),
            Region("eeprom", 0, part.eeprom_size, EEPROM_BLOCK, EEPROM_BLOCK, "rw", 1),
        )
        if self.mode == "isp":
            # ISP writes the whole flash: it is how bootloaders get there in the first place.
            return MemoryMap(regions, bootloader=None, app_start=0)
        boot, _ = self._boot_facts()
        return MemoryMap(regions, bootloader=(part.flash_size - boot, part.flash_size))

    # ---------------------------------------------------------------- memory access

    def read(self, region: Region, address: int, length: int) -> bytes:
        target = self.boot or self.isp
        assert target is not None
        if region.name == "eeprom":
            return target.read_eeprom(address, length)
        return target.read_flash(address, length)

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        target = self.boot or self.isp
        assert target is not None
        if region.name == "eeprom":
            target.write_eeprom(address, data)
        else:
            target.write_flash_page(address, data)

    def erase_chip(self) -> None:
        if self.isp is None:
            raise UnsupportedError(
                "the stk500v2 bootloader has no chip erase (it answers the command but "
                "erases nothing)",
                "pages are erased as they are written",
            )
        self.isp.chip_erase()

    def read_fuses(self) -> dict[str, int]:
        if self.isp is not None:
            return {name: self.isp.read_fuse(name) for name in self.isp.part.fuses}
        # The bootloader reads the real fuses with LPM, chosen by the instruction bytes.
        fuses = isp_defaults().fuses
        return {name: read_byte(self.wire, CMD_READ_FUSE_ISP, fuses[name].read) for name in FUSES}

    def write_fuse(self, name: str, value: int) -> None:
        if self.isp is None:
            raise UnsupportedError(
                "fuses cannot be written through the stk500v2 bootloader (SPM cannot)",
                "use an ISP programmer",
            )
        self.isp.write_fuse(name, value)

    def read_lock(self) -> int:
        if self.isp is not None:
            return self.isp.read_lock()
        return read_byte(self.wire, CMD_READ_LOCK_ISP, isp_defaults().lock.read)

    def write_lock(self, value: int) -> None:
        if self.isp is None:
            raise UnsupportedError(
                "the stk500v2 bootloader can only add boot-section protection, never remove "
                "it, so flashsh does not write lock bits through it",
                "use an ISP programmer",
            )
        self.isp.write_lock(value)

    # ---------------------------------------------------------------- session

    def keep_alive(self) -> None:
        self.wire.command(bytes([CMD_GET_PARAMETER, PARAM_SW_MAJOR]), 0.3, retries=1)

    def reconnect(self) -> None:
        """Bootloader: reset the board and sign on again. Programmer: sign on and enter
        programming mode again (it controls the target's reset itself)."""
        self.wire.resync()
        bootloader = self.mode == "bootloader"
        how = self._connect(reset=bootloader, reset_first=bootloader)
        if how is None:
            raise NoAnswerError(
                f"the {'bootloader' if self.mode == 'bootloader' else 'programmer'} is no "
                "longer answering",
                "press the board's reset button or check the cable, then `connect` again",
            )
        old = self.boot
        self.boot = self.isp = None
        self._initialise()
        if old is not None and self.boot is not None:
            # Pages erased ahead of the pointer stay erased through a reset; their saved
            # contents must still be written back.
            self.boot.adopt(old)

    def start_application(self) -> None:
        if self.boot is not None:
            self.boot.finish()  # pages waiting to be written back must be there first
            # It answers, then waits about 100 ms and jumps to the application.
            self.wire.command(bytes([CMD_LEAVE_PROGMODE_ISP, 1, 1]))
        elif self.isp is not None:
            self.isp.leave()

    def close(self) -> None:
        # Leave nothing half done: write back saved pages, release the target from reset.
        with contextlib.suppress(FlashshError, OSError):
            if self.boot is not None:
                self.boot.finish()
            elif self.isp is not None and self.isp.in_progmode:
                self.isp.leave()
        super().close()
