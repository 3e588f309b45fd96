"""The STM32 system-memory DFU bootloader (0483:df11, ST's DfuSe): ``sim://dfuse``.

Descriptors as the ROM sends them (fact sheet dfu.md §5): one interface, class
FE/01/02, one alternate setting per memory with the layout strings verbatim, no
endpoints, configuration attributes 0xC0, and the functional descriptor (bmAttributes
0x0B, wDetachTimeOut 255, wTransferSize 2048, bcdDFUVersion 0x011A) after the interface
descriptors, where libusb hands it over as the extra bytes of the last alternate setting.

The ROM's machine (AN2662 §4.4-4.5, stm32-testing.md §2.1):

* a DNLOAD is taken in dfuIDLE or dfuDNLOAD-IDLE only; what it asks for runs on the
  next GETSTATUS, which answers dfuDNBUSY with the time it will take; the GETSTATUS
  after that answers dfuDNLOAD-IDLE, or dfuERROR with errTARGET (address not allowed),
  errVENDOR (read-out protection) or errPROG (the flash there was not erased);
* block 0 carries a command (``21`` set address, ``41`` erase a page or sector, ``41``
  alone mass erase, ``92`` read unprotect); block 1 is stalled; block N >= 2 writes at
  pointer + (N - 2) x length. Nothing is erased unless asked;
* UPLOAD works from dfuIDLE or dfuUPLOAD-IDLE only: block 0 lists the commands, block
  N >= 2 reads at pointer + (N - 2) x length;
* a zero-length DNLOAD leaves: the next GETSTATUS answers dfuMANIFEST, the device drops
  off the bus and jumps to the address pointer (``jumped_to``). A vector table there
  (stack pointer in RAM, reset vector in flash or RAM) runs: the board is gone, or comes
  back as Klipper with ``app=klipper``. Anything else faults, and the chip resets into
  the ROM again (BOOT0 is still high), as AN2662 describes;
* read unprotect and option-byte writes end in a reset: the ROM comes back, the flash
  erased and protection off after an unprotect.

Flash behaves as flashsh.sims.stm32_flash models it for the same part (stm32.toml):
writing over programmed bytes is refused (errPROG) unless ``overwrite=and``.

Time: control transfers cost full-speed frames (SimUsbDevice); the chip's work costs
the part's typical times from stm32.toml: F4 at x32 parallelism (DS8626 Table 40: a
word 16 us, a 16/64/128 KiB sector 250/550/1000 ms, mass erase 8 s), F0 (DS9826: a
half-word 53.5 us, a 2 KiB page 20 ms). The ROM's own bwPollTimeout values are not
documented (UNCONFIRMED): the simulator reports the time the work takes, except a mass
erase with ``erase_lie=1``, which reports 100 ms as the STM32F405 does (dfu-util
dfuse.c). A request that arrives while the chip is still busy is answered when the work
ends (``busy=nak``; after the host's timeout it is lost) or stalled (``busy=stall``, as
STM32L4 ROMs do). With ``throttle=0`` nothing waits and every poll time is 0, the lie
excepted.
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass
from typing import NoReturn

from flashsh.chips.dfuse import DfuSeRomChip, simulated_chip
from flashsh.chips.stm32 import stm32_part
from flashsh.errors import FlashshError
from flashsh.protocols.dfu_layout import parse_layout
from flashsh.protocols.dfu_wire import Functional, Request, State, Status
from flashsh.sims.board import number_option, option_values
from flashsh.sims.dfuse_faults import DfuFaults
from flashsh.sims.stm32_flash import Stm32Memory
from flashsh.sims.usb_device import AltSetting, Gone, Identity, Setup, Silent, SimUsbDevice, Stall

FUNCTIONAL = Functional(attributes=0x0B, detach_timeout_ms=255, transfer_size=2048,
                        dfu_version=0x011A)  # fmt: skip
#: What UPLOAD block 0 answers (AN2662 §4.4.2 for the F105/F107; newer ROMs may list
#: more, UNCONFIRMED).
COMMANDS = bytes([0x00, 0x21, 0x41, 0x92])
SET_ADDRESS, ERASE, READ_UNPROTECT = 0x21, 0x41, 0x92
#: The mass-erase time the STM32F405 reports (dfu-util dfuse.c).
LIED_MASS_ERASE_MS = 100
#: Option-byte erase + program before the reset (tens of ms in the datasheets; UNCONFIRMED).
OPTION_WRITE_S = 0.04
#: How long a host waits for a control transfer when it does not say (dfu-util: 5 s).
HOST_TIMEOUT_S = 5.0
#: From the jump or reset to the device being on the bus again.
REBOOT_S = 0.05
FEATURE_ADDRESS = 0xFFFF0000

OPTIONS = {
    "chip": "stm32f407 (default), stm32f411, stm32f072, stm32f042",
    "throttle": "1 = real time (default), 0 = no delays",
    "greet": "ok (default) or error: the first GETSTATUS after each boot reports "
    "dfuERROR/errFIRMWARE, as on an F407 and an F042",
    "rdp": "1: read-out protection (level 1) on",
    "erase_lie": "1: a mass erase reports 100 ms, as the STM32F405 does",
    "mass_erase_ms": "override the mass-erase time",
    "busy": "nak (default): a request while the chip works is answered when it is done; "
    "stall: it is stalled (STM32L4)",
    "overwrite": "refuse (default): a write over programmed flash fails (errPROG); "
    "and: the bits are ANDed in",
    "image": "file (.hex, .elf, .bin at the flash start) in flash at power-up",
    "app": "what a leave to a valid vector table leads to: none (default: the board "
    "leaves the bus), klipper (it comes back as Klipper on USB), rom (it resets into "
    "the ROM)",
    "fault": "stall:N, timeout:N, vanish:N (the Nth DFU request; repeatable)",
    "bad_length": "1: string descriptors of the alternate settings give a length byte "
    "2 short (the STM32F427's fault)",
    "serial": "USB serial number",
}


@dataclass
class Work:
    """What one DNLOAD makes the chip do."""

    status: Status = Status.OK
    seconds: float = 0.0
    #: The poll time the ROM reports when it is not ``seconds`` (the F405's lie).
    reported: float | None = None
    #: The chip resets when the work is done.
    reset: bool = False


class DfuSeRom(SimUsbDevice):
    """The ROM DFU device of one STM32."""

    def __init__(
        self,
        chip: DfuSeRomChip,
        *,
        throttle: bool = False,
        greet_error: bool = False,
        rdp: bool = False,
        erase_lie: bool = False,
        mass_erase_s: float | None = None,
        busy: str = "nak",
        overwrite: str = "refuse",
        app: str = "none",
        faults: DfuFaults | None = None,
        bad_length: bool = False,
        serial: str | None = None,
    ) -> None:
        super().__init__(throttle=throttle)
        if chip.part is None:
            raise ValueError(f"{chip.key} has no memory model to simulate")
        self.rom_chip = chip
        self.chip = stm32_part(chip.part)
        self.memory = Stm32Memory(self.chip, overwrite="and" if overwrite == "and" else "nack")
        if rdp:
            self.memory.set_rdp_level(1)
        self.identity = Identity(0x0483, 0xDF11, chip.bcd_device, "STMicroelectronics",
                                 "STM32  BOOTLOADER", serial or chip.serial)  # fmt: skip
        last = len(chip.alts) - 1
        self.alt_settings = tuple(
            AltSetting(0, n, 0xFE, 0x01, 0x02, text, extra=FUNCTIONAL.pack() if n == last else b"")
            for n, text in enumerate(chip.alts)
        )
        self.config_attributes = 0xC0
        self.layouts = [parse_layout(text) for text in chip.alts]
        self.greet_error = greet_error
        self.erase_lie = erase_lie
        self.mass_erase_s = (
            mass_erase_s if mass_erase_s is not None else self.chip.mass_erase_ms[0] / 1000
        )
        self.busy_mode = busy
        self.app = app
        self.faults = faults or DfuFaults()
        self.bad_length = bad_length
        self.feature = bytearray(4)
        #: Where the last leave jumped; None until one happened.
        self.jumped_to: int | None = None
        #: What the ROM carried out, in order: ("erase", address), ("write", address,
        #: length), ("read", address, length), ("mass_erase",), ("leave", address), ...
        self.executed: list[tuple[object, ...]] = []
        #: Every DFU class request: (name, wValue, length), as faults count them.
        self.requests: list[tuple[str, int, int]] = []
        #: Requests stalled because the chip was still busy (busy=stall).
        self.stalled_while_busy = 0
        #: Times the chip started the ROM (each plug-in, reset or re-enumeration).
        self.boots = 0
        self._power_on()

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> DfuSeRom:
        one = option_values("dfuse", options, OPTIONS)
        try:
            chip = simulated_chip(one.get("chip", "stm32f407"))
        except FlashshError as exc:
            raise ValueError(str(exc)) from None
        choices = {"greet": ("ok", "error"), "busy": ("nak", "stall"),
                   "overwrite": ("refuse", "and"), "app": ("none", "klipper", "rom")}  # fmt: skip
        for name, valid in choices.items():
            if one.get(name, valid[0]).lower() not in valid:
                raise ValueError(f"option {name}={one[name]!r}; valid: {', '.join(valid)}")
        mass = one.get("mass_erase_ms")
        sim = cls(
            chip,
            throttle=bool(number_option("throttle", one.get("throttle", "1"))),
            greet_error=one.get("greet", "ok").lower() == "error",
            rdp=bool(number_option("rdp", one.get("rdp", "0"))),
            erase_lie=bool(number_option("erase_lie", one.get("erase_lie", "0"))),
            mass_erase_s=None if mass is None else number_option("mass_erase_ms", mass) / 1000,
            busy=one.get("busy", "nak").lower(),
            overwrite=one.get("overwrite", "refuse").lower(),
            app=one.get("app", "none").lower(),
            faults=DfuFaults.parse(options.get("fault", [])),
            bad_length=bool(number_option("bad_length", one.get("bad_length", "0"))),
            serial=one.get("serial"),
        )
        if sim.app == "klipper" and _klipper_app_class() is None:
            raise ValueError("app=klipper needs flashsh.sims.usb_app, which is not installed")
        if "image" in one:
            sim.load_image(one["image"])
        return sim

    def load_image(self, path: str) -> None:
        """Put ``path`` in flash as if programmed earlier. Raises ValueError."""
        from flashsh.images.load import load_image

        try:
            image = load_image(path, default_address=self.chip.flash_base)
        except FlashshError as exc:
            raise ValueError(str(exc)) from None
        self.memory.load([(s.address, s.data) for s in image.segments])

    # ---------------------------------------------------------------- power-up

    def _power_on(self) -> None:
        self.pointer = self.chip.flash_base  # AN2662 §4.4.1: the default pointer
        self.state = State.ERROR if self.greet_error else State.IDLE
        self.status = Status.ERR_FIRMWARE if self.greet_error else Status.OK
        self.pending: tuple[object, ...] | None = None
        self.after: tuple[State, Status] = (State.DNLOAD_IDLE, Status.OK)
        self.busy_until = 0.0

    def on_plug(self) -> None:
        self.boots += 1
        self._power_on()

    def bus_reset(self) -> None:
        super().bus_reset()
        self.state, self.status, self.pending = State.IDLE, Status.OK, None

    def string_descriptor(self, index: int) -> bytes:
        data = super().string_descriptor(index)
        if self.bad_length and index > 3:
            return bytes([data[0] - 2]) + data[1:]
        return data

    # ---------------------------------------------------------------- requests

    def control(self, setup: Setup, data: bytes) -> bytes:
        if setup.kind != 1 or setup.index != 0:
            return super().control(setup, data)
        self.requests.append((_request_name(setup.request), setup.value,
                              setup.length if setup.device_to_host else len(data)))  # fmt: skip
        fault = self.faults.next_request()
        if fault == "stall":
            self._fail(Status.ERR_STALLEDPKT)
        if fault == "timeout":
            raise Silent("fault: no answer")
        if fault == "vanish":
            self.vanish()
            raise Gone("fault: the board left the bus")
        self._wait_if_busy(setup)
        request = Request(setup.request) if setup.request <= Request.ABORT else None
        if request is Request.GETSTATUS:
            return self._get_status()
        if request is Request.GETSTATE:
            return bytes([self.state])
        if request is Request.CLRSTATUS:
            # ST's DFU class code answers CLRSTATUS outside dfuERROR with errUNKNOWN
            # (the ROM's reaction is UNCONFIRMED).
            if self.state == State.ERROR:
                self.state, self.status = State.IDLE, Status.OK
            else:
                self.state, self.status = State.ERROR, Status.ERR_UNKNOWN
            return b""
        if request is Request.ABORT:
            if self.state == State.ERROR:
                raise Stall("ABORT in dfuERROR")
            self.state, self.status, self.pending = State.IDLE, Status.OK, None
            return b""
        if request is Request.DNLOAD:
            return self._dnload(setup.value, data)
        if request is Request.UPLOAD:
            return self._upload(setup.value, setup.length)
        return self._fail(Status.ERR_STALLEDPKT)  # DETACH and unknown requests

    def _fail(self, status: Status) -> NoReturn:
        self.state, self.status, self.pending = State.ERROR, status, None
        raise Stall(f"DfuSe ROM: {status.name}")

    def _clock(self) -> float:
        return time.monotonic() if self.throttle else self.elapsed

    def _wait_if_busy(self, setup: Setup) -> None:
        """A request while the chip erases or writes: the USB interrupt is served only
        when the flash operation ends (busy=nak), or the request is stalled."""
        if self.state != State.DNBUSY:
            return
        remaining = self.busy_until - self._clock()
        if remaining <= 0:
            return
        if self.busy_mode == "stall":
            self.stalled_while_busy += 1
            raise Stall("busy")
        limit = setup.timeout_ms / 1000 or HOST_TIMEOUT_S
        if remaining > limit:
            time.sleep(limit)
            raise Silent("still busy when the host gave up")
        time.sleep(remaining)

    def _reply(self, poll_ms: int = 0) -> bytes:
        return (
            struct.pack("<B", self.status) + poll_ms.to_bytes(3, "little") + bytes([self.state, 0])
        )

    def _get_status(self) -> bytes:
        if self.state == State.DNLOAD_SYNC and self.pending is not None:
            return self._start_pending()
        if self.state == State.DNBUSY:
            self.state, self.status = self.after
        elif self.state == State.MANIFEST_SYNC:
            self.state = State.MANIFEST
            reply = self._reply()
            self._leave()
            return reply
        return self._reply()

    def _start_pending(self) -> bytes:
        """The GETSTATUS that makes the ROM carry out the DNLOAD: dfuDNBUSY now, the
        outcome on the next GETSTATUS once the work is done."""
        assert self.pending is not None
        kind, *args = self.pending
        self.pending = None
        work = self._execute(str(kind), args)
        failed = work.status != Status.OK
        self.after = (State.ERROR if failed else State.DNLOAD_IDLE, work.status)
        self.elapsed += work.seconds
        self.busy_until = self._clock() + (work.seconds if self.throttle else 0.0)
        self.state, self.status = State.DNBUSY, Status.OK
        if work.reported is not None:
            poll_ms = math.ceil(work.reported * 1000)
        else:
            poll_ms = math.ceil(work.seconds * 1000) if self.throttle else 0
        reply = self._reply(poll_ms)
        if work.reset:
            # The work ends in a system reset; BOOT0 is still high, so the ROM returns.
            delay = work.seconds if self.throttle else 0.0
            self.reenumerate(self, after=delay + REBOOT_S)
        return reply

    # ---------------------------------------------------------------- DNLOAD

    def _dnload(self, block: int, data: bytes) -> bytes:
        if self.state not in (State.IDLE, State.DNLOAD_IDLE):
            return self._fail(Status.ERR_STALLEDPKT)
        if not data:
            self.state, self.pending = State.MANIFEST_SYNC, None
            return b""
        if block == 1:
            return self._fail(Status.ERR_STALLEDPKT)
        if block == 0:
            command = self._command(data)
            if command is None:
                return self._fail(Status.ERR_STALLEDPKT)
            self.pending = command
        else:
            address = (self.pointer + (block - 2) * len(data)) & 0xFFFFFFFF
            self.pending = ("write", address, bytes(data))
        self.state = State.DNLOAD_SYNC
        return b""

    @staticmethod
    def _command(data: bytes) -> tuple[object, ...] | None:
        code = data[0]
        if code in (SET_ADDRESS, ERASE) and len(data) == 5:
            name = "address" if code == SET_ADDRESS else "erase"
            return (name, struct.unpack_from("<I", data, 1)[0])
        if code == ERASE and len(data) == 1:
            return ("mass_erase",)
        if code == READ_UNPROTECT and len(data) == 1:
            return ("unprotect",)
        return None

    def _execute(self, kind: str, args: list[object]) -> Work:
        """Carry out one DNLOAD."""
        memory = self.memory
        if kind == "address":
            address = int(args[0])  # type: ignore[call-overload]
            if not (memory.readable(address) or _is_feature(address, 1)):
                return Work(Status.ERR_TARGET)
            self.pointer = address
            self.executed.append(("address", address))
            return Work()
        if kind == "unprotect":
            memory.readout_unprotect()
            self.executed.append(("unprotect",))
            return Work(seconds=self.mass_erase_s, reset=True)
        if memory.rdp_level != 0:
            return Work(Status.ERR_VENDOR)
        if kind == "mass_erase":
            memory.mass_erase()
            self.executed.append(("mass_erase",))
            lie = LIED_MASS_ERASE_MS / 1000 if self.erase_lie else None
            return Work(seconds=self.mass_erase_s, reported=lie)
        if kind == "erase":
            unit = self.chip.unit_at(int(args[0]))  # type: ignore[call-overload]
            if unit is None:
                return Work(Status.ERR_TARGET)
            memory.erase_unit(unit)
            self.executed.append(("erase", unit.address))
            return Work(seconds=self.chip.erase_ms(unit)[0] / 1000)
        return self._write(int(args[0]), bytes(args[1]))  # type: ignore[call-overload, arg-type]

    def _write(self, address: int, data: bytes) -> Work:
        if _is_feature(address, len(data)):
            start = address - FEATURE_ADDRESS
            self.feature[start : start + len(data)] = data
            return Work()
        kind = self.memory.kind_of(address)
        if kind not in ("flash", "ram", "option") or not self.memory.writable(address, len(data)):
            return Work(Status.ERR_TARGET)
        if self.memory.write(address, data) == "refused":
            # The controller refuses to program a word that is not erased; which status
            # the ROM then gives is UNCONFIRMED.
            return Work(Status.ERR_PROG)
        self.executed.append(("write", address, len(data)))
        if kind == "option":
            return Work(seconds=OPTION_WRITE_S, reset=True)  # AN2662 Fig. 57
        if kind == "ram":
            return Work()
        return Work(seconds=self.chip.program_ms(len(data))[0] / 1000)

    # ---------------------------------------------------------------- UPLOAD

    def _upload(self, block: int, length: int) -> bytes:
        if self.state not in (State.IDLE, State.UPLOAD_IDLE) or block == 1:
            return self._fail(Status.ERR_STALLEDPKT)
        if block == 0:
            answer = COMMANDS[:length]
        else:
            if length > FUNCTIONAL.transfer_size:
                return self._fail(Status.ERR_STALLEDPKT)
            if self.memory.rdp_level != 0:
                return self._fail(Status.ERR_VENDOR)
            address = (self.pointer + (block - 2) * length) & 0xFFFFFFFF
            answer = self._read(address, length)
            self.executed.append(("read", address, length))
        # A short answer ends the upload (DFU 1.1 A.2.10).
        self.state = State.UPLOAD_IDLE if len(answer) == length else State.IDLE
        return answer

    def _read(self, address: int, length: int) -> bytes:
        if _is_feature(address, length):
            start = address - FEATURE_ADDRESS
            return bytes(self.feature[start : start + length])
        if not self.memory.readable(address, length):
            self._fail(Status.ERR_TARGET)
        return self.memory.read(address, length)

    # ---------------------------------------------------------------- leaving

    def _leave(self) -> None:
        """Manifestation: release USB and jump to the pointer (AN2662 §4.5.5)."""
        self.jumped_to = self.pointer
        self.executed.append(("leave", self.pointer))
        if not self._runs(self.pointer):
            self.reenumerate(self, after=REBOOT_S)  # a fault, a reset, the ROM again
        elif self.app == "klipper":
            app_class = _klipper_app_class()
            assert app_class is not None
            mcu = self.rom_chip.klipper_mcu
            self.reenumerate(app_class(self, throttle=self.throttle, mcu=mcu,
                                       serial=self.identity.serial), after=REBOOT_S)  # fmt: skip
        elif self.app == "rom":
            self.reenumerate(self, after=REBOOT_S)
        else:
            self.vanish()

    def _runs(self, address: int) -> bool:
        """A vector table: initial stack pointer in RAM, reset vector (Thumb) in flash
        or RAM."""
        chip = self.chip
        if not self.memory.readable(address, 8):
            return False
        sp, pc = struct.unpack("<II", self.memory.read(address, 8))
        in_ram = chip.ram_base < sp <= chip.ram_end
        target = pc & ~1
        runs_from = (
            chip.flash_base <= target < chip.flash_end or chip.ram_base <= target < chip.ram_end
        )
        return in_ram and bool(pc & 1) and runs_from

    # ---------------------------------------------------------------- inspection

    @property
    def flash(self) -> bytes:
        return bytes(self.memory.flash)

    def describe(self) -> str:
        chip = self.chip
        return (
            f"{self.rom_chip.name} ROM DFU (0483:df11, "
            f"bcdDevice 0x{self.identity.bcd_device:04x}), "
            f"{chip.flash_size // 1024} KiB flash, RDP level {self.memory.rdp_level}"
        )


def _request_name(code: int) -> str:
    try:
        return Request(code).name
    except ValueError:
        return f"request {code}"


def _is_feature(address: int, length: int) -> bool:
    """Inside the 4-byte "Device Feature" area of the F4 ROMs."""
    return address >= FEATURE_ADDRESS and address + length <= FEATURE_ADDRESS + 4


def _klipper_app_class() -> type | None:
    """Klipper's USB application simulator, if this installation has it."""
    try:
        from flashsh.sims.usb_app import KlipperUsbApp
    except ImportError:
        return None
    return KlipperUsbApp
