"""The STM32duino (Maple) DFU bootloader on a Blue Pill: ``sim://maple?flash=64``.

The request handling follows STM32duino-bootloader's dfu.c (dfuUpdateByRequest,
dfuUpdateByReset, dfuCopyBufferToExec, dfuCopyUPLOAD) line by line, because its
departures from DFU 1.1 are what break naive hosts (dfu.md §7.2):

- the state changes when the request arrives, before any reply, so a GETSTATUS answers
  with the state it just entered; a request whose handling sets a status other than OK
  is stalled, and the next request clears the status again (dfuERROR with bStatus 0);
- block numbers are ignored: blocks land one after another from the alt's base;
- the GETSTATUS after a DNLOAD erases the page the block starts in and programs the
  block in 32-bit words (F1 half-word rules: a half-word that is not blank is left as
  it is, unless 0x0000 is written), all before it answers, bwPollTimeout 0;
- GETSTATUS or GETSTATE in dfuDNLOAD-IDLE go to dfuIDLE; the next DNLOAD starts over;
- a download on alt 1 first erases the page at 0x08002000; alt 0 is refused;
- the first UPLOAD sets the block length and is not checked against the end of flash;
  later ones are, and past the end they come back short or empty (16-bit arithmetic);
- a USB reset in any state but dfuIDLE (and appIDLE/appDETACH) reboots the chip.

Rebooting runs main.c: backup register DR10 0x424D (set when a download starts) starts
a valid application at once; 0x424C keeps the bootloader; otherwise it waits ``wait``
seconds for a DFU request (BOOT1 high, or no valid application: for ever), then starts
the application. ``app=klipper`` makes the application Klipper on USB
(flashsh.sims.usb_app), whose 1200-baud touch reboots back into this bootloader.

Time: USB transfers as every simulated USB device; page erase and half-word program
times from the chip data (F103 datasheet tERASE 20-40 ms, tPROG 52.5-70 µs, typical
charged), spent inside the GETSTATUS that writes.
"""

from __future__ import annotations

import threading

from flashsh.chips.stm32 import Stm32Chip, stm32_part
from flashsh.protocols.dfu_wire import Functional, Request, State, Status, StatusReply
from flashsh.sims.board import number_option, option_values
from flashsh.sims.faults import fault_count
from flashsh.sims.usb_device import AltSetting, Gone, Identity, Setup, Silent, SimUsbDevice, Stall

FLASH_BASE = 0x08000000
BOOTLOADER_SIZE = 0x2000
APP_8005000 = 0x08005000  # config.h USER_CODE_FLASH0X8005000 (alt 1)
APP_8002000 = 0x08002000  # config.h USER_CODE_FLASH0X8002000 (alt 2)
RECV_BUFFER = 0x800  # config.h LARGEST_FLASH_PAGE_SIZE: the DNLOAD buffer
FLAG_STAY = 0x424C  # config.h RTC_BOOTLOADER_FLAG
FLAG_JUST_UPLOADED = 0x424D  # config.h RTC_BOOTLOADER_JUST_UPLOADED
VERSION = "STM32duino bootloader v1.0"
ALT_NAMES = (
    f"{VERSION}  ERROR. Upload to RAM not supported.",
    f"{VERSION}  Upload to Flash 0x8005000",
    f"{VERSION}  Upload to Flash 0x8002000",
)
PARTS = {64: "stm32f103c8", 128: "stm32f103cb", 256: "stm32f103rc", 512: "stm32f103re"}
#: The bootloader's wait after a plain reset: BOOTLOADER_WAIT (6 on boards with a button)
#: LED strobes of 2 x 0x100000 delay-loop turns, about 1 s at 72 MHz (UNCONFIRMED).
WAIT_S = 1.0
#: From reset to the host seeing the device again (UNCONFIRMED); shorter unthrottled.
REBOOT_S, REBOOT_FAST_S = 0.2, 0.02

OPTIONS = {
    "flash": "flash size in KiB: 64 (default), 128, 256, 512 (pages: 1 KiB up to 128)",
    "chip": "an STM32F1 part instead of flash= (stm32f103c8, stm32f103cb, ...)",
    "throttle": "1 = real time (default), 0 = no delays",
    "fault": "stall:N, timeout:N or vanish:N: DFU request N (counted from 1) stalls, "
    "gets no answer, or the board leaves the bus for good",
    "app": "what a started application is on USB: none (default) or klipper",
    "boot1": "1 (default): BOOT1 high, the bootloader stays after a reset that followed "
    "no download; 0: it waits, then starts a valid application",
    "wait": f"seconds the bootloader waits after such a reset (default {WAIT_S})",
}
FAULT_KINDS = ("stall", "timeout", "vanish")


def user_code_ok(first_word: int) -> bool:
    """hardware.c checkUserCode: the first word is a stack pointer in SRAM."""
    return first_word & 0x2FFE0000 == 0x20000000


class MapleDfu(SimUsbDevice):
    """The bootloader and the chip's flash; ``flash`` is the whole flash array."""

    def __init__(self, chip: Stm32Chip, *, throttle: bool = False, app: str = "none",
                 boot1: bool = True, wait: float | None = None,
                 faults: dict[str, set[int]] | None = None) -> None:  # fmt: skip
        super().__init__(throttle=throttle)
        self.chip = chip
        self.page_size = 2048 if chip.flash_size > 128 * 1024 else 1024  # getFlashPageSize
        self.identity = Identity(0x1EAF, 0x0003, 0x0201, "LeafLabs", "Maple 003", "LLM 003",
                                 bcd_usb=0x0100)  # fmt: skip
        functional = Functional(0x03, 255, self.page_size, 0x0110).pack()
        self.alt_settings = tuple(
            AltSetting(0, n, 0xFE, 0x01, 0x02, name, extra=functional if n == 2 else b"")
            for n, name in enumerate(ALT_NAMES)
        )
        self.flash = bytearray(b"\xff") * chip.flash_size
        stand_in = (0x20005000).to_bytes(4, "little") + (0x08000101).to_bytes(4, "little")
        body = b"stm32duino bootloader stand-in " * (BOOTLOADER_SIZE // 31 + 1)
        self.flash[:BOOTLOADER_SIZE] = (stand_in + body)[:BOOTLOADER_SIZE]
        self.app = app
        self.boot1 = boot1
        self.wait = wait if wait is not None else WAIT_S
        self.reboot_s = REBOOT_S if throttle else REBOOT_FAST_S
        self.faults = faults or {}
        self.dr10 = 0  # backup register: survives resets, not power loss
        self.recv = bytearray(RECV_BUFFER)
        self.unlocked = False
        #: Every DFU class request: (bRequest, wValue, wLength), for tests.
        self.requests: list[tuple[int, int, int]] = []
        #: Where each start of the application jumped to.
        self.app_starts: list[int] = []
        self.hard_resets = 0
        self.hung = False
        self._plan: str | None = None
        self._power_on()

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> MapleDfu:
        one = option_values("maple", options, OPTIONS)
        if "chip" in one:
            try:
                chip = stm32_part(one["chip"])
            except Exception as exc:
                raise ValueError(f"option chip={one['chip']!r}: {exc}") from None
            if chip.family != "f1":
                raise ValueError(f"option chip={one['chip']!r}: the bootloader runs on STM32F1")
        else:
            kib = int(number_option("flash", one.get("flash", "64")))
            if kib not in PARTS:
                raise ValueError(f"option flash={one['flash']!r}: 64, 128, 256 or 512")
            chip = stm32_part(PARTS[kib])
        app = one.get("app", "none").lower()
        if app not in ("none", "klipper"):
            raise ValueError(f"option app={app!r}: none or klipper")
        wait = number_option("wait", one["wait"]) if "wait" in one else None
        return cls(
            chip,
            throttle=bool(number_option("throttle", one.get("throttle", "1"))),
            app=app,
            boot1=bool(number_option("boot1", one.get("boot1", "1"))),
            wait=wait,
            faults=parse_faults(options.get("fault", [])),
        )

    # ------------------------------------------------------------ memory

    @property
    def flash_end(self) -> int:
        return FLASH_BASE + len(self.flash)

    def memory(self, address: int, length: int) -> bytes:
        """What the CPU reads there; outside flash it takes a bus fault and hangs
        (the bootloader has no fault handler; UNCONFIRMED on silicon)."""
        if address >= FLASH_BASE and address + length <= self.flash_end:
            at = address - FLASH_BASE
            return bytes(self.flash[at : at + length])
        self.hung = True
        raise Silent(f"read at 0x{address:08x} is outside flash")

    def _erase_page(self, address: int) -> None:
        """flashErasePage: FLASH_AR may point anywhere in the page."""
        if not self.unlocked or not FLASH_BASE <= address < self.flash_end:
            return
        first = (address - FLASH_BASE) // self.page_size * self.page_size
        self.flash[first : first + self.page_size] = b"\xff" * self.page_size
        unit = self.chip.unit_at(address)
        if unit is not None:
            self.spend(self.chip.erase_ms(unit)[0] / 1000)

    def _program_half(self, address: int, value: int) -> None:
        """One half-word with the F1 rule: not blank and not 0x0000 = PGERR, unchanged."""
        self.spend(self.chip.program_us[0] / 1e6)
        if not self.unlocked or not FLASH_BASE <= address < self.flash_end - 1:
            return
        at = address - FLASH_BASE
        if self.flash[at : at + 2] == b"\xff\xff" or value == 0:
            self.flash[at : at + 2] = value.to_bytes(2, "little")

    def user_code(self) -> int | None:
        """main.c: the application the bootloader would start, if any."""
        for base in (APP_8002000, APP_8005000):
            at = base - FLASH_BASE
            if user_code_ok(int.from_bytes(self.flash[at : at + 4], "little")):
                return base
        return None

    # ------------------------------------------------------------ power and reset

    def _power_on(self) -> None:
        """dfuInit, as usbInit runs it at every start."""
        self.state = State.IDLE
        self.status = Status.OK
        self.fw_len = 0  # userFirmwareLen
        self.block_len = 0  # thisBlockLen
        self.upload_len = 0  # uploadBlockLen
        self.app_addr = 0x20000C00  # userAppAddr: USER_CODE_RAM until an alt sets it
        self.app_end = 0x20005000
        self.upload_type = 0  # 1: alt 1, 2: alt 2
        self.busy = False  # dfuBusy: a DFU request came, the wait no longer ends

    def on_plug(self) -> None:
        self._power_on()
        plan = self._plan or self._boot_plan()
        self._plan = None
        attachment = self.attachment
        if plan == "wait":
            timer = threading.Timer(self.wait, self._wait_over, args=(attachment,))
        elif plan == "app":
            timer = threading.Timer(0.0, self._wait_over, args=(attachment,))
        else:
            return
        timer.daemon = True
        timer.start()

    def _boot_plan(self) -> str:
        """main.c after a reset: "app" (jump at once), "stay" or "wait"."""
        flag, app = self.dr10, self.user_code()
        if flag in (FLAG_STAY, FLAG_JUST_UPLOADED):
            self.dr10 = 0  # checkAndClearBootloaderFlag
        if flag == FLAG_JUST_UPLOADED:
            if app is not None:
                return "app"
            flag = 0  # nothing to run: it resets once more, with the flag clear
        return "stay" if flag == FLAG_STAY or app is None or self.boot1 else "wait"

    def _wait_over(self, attachment: object) -> None:
        with self.lock:
            if attachment is not self.attachment or self.busy or self.bus is None:
                return
            port = self.attachment.port if self.attachment else "1-1"
            self.vanish()
            self._start_app(port)

    def _start_app(self, port: str) -> None:
        base = self.user_code()
        if base is None:
            return
        self.app_starts.append(base)
        if self.app != "klipper" or self.bus is None:
            return  # an application without USB: the board is simply gone
        try:
            from flashsh.sims.usb_app import KlipperUsbApp
        except ImportError:
            return
        app = KlipperUsbApp(self, mcu="stm32f103xe", throttle=self.throttle)
        self.bus.plug_later(app, port=port, after=self.reboot_s)

    def hard_reset(self) -> None:
        """systemHardReset: off the bus, then main.c decides what comes back."""
        self.hard_resets += 1
        port = self.attachment.port if self.attachment else "1-1"
        bus = self.bus
        plan = self._boot_plan()
        self.vanish()
        if bus is None:
            return
        if plan == "app":
            self._start_app(port)
        else:
            self._plan = plan
            bus.plug_later(self, port=port, after=self.reboot_s)

    def bus_reset(self) -> None:
        """dfuUpdateByReset."""
        with self.lock:
            super().bus_reset()
            if self.hung:
                return
            self.fw_len = 0
            if self.state == State.APP_DETACH:
                self.state, self.status = State.IDLE, Status.OK
            elif self.state not in (State.APP_IDLE, State.IDLE):
                self.state, self.status = State.IDLE, Status.OK
                self.hard_reset()

    # ------------------------------------------------------------ requests

    def control(self, setup: Setup, data: bytes) -> bytes:
        if (setup.request_type & 0x7F) != 0x21:  # class request to the interface
            raise Stall("not a DFU class request")
        if self.hung:
            raise Silent("the chip is stuck in a fault handler")
        self.requests.append((setup.request, setup.value, setup.length))
        self._inject_fault(len(self.requests))
        self.busy = True
        if not self._update(setup):
            raise Stall(f"DFU request {setup.request} refused in {self.state.name}")
        return self._copy(setup, data)

    def _inject_fault(self, n: int) -> None:
        if n in self.faults.get("stall", ()):
            raise Stall(f"fault: request {n} stalls")
        if n in self.faults.get("timeout", ()):
            raise Silent(f"fault: request {n} gets no answer")
        if n in self.faults.get("vanish", ()):
            self.vanish()
            raise Gone(f"fault: the board left the bus at request {n}")

    def _update(self, setup: Setup) -> bool:
        """dfuUpdateByRequest: the new state, decided as the request arrives."""
        start = self.state
        self.status = Status.OK
        handler = {
            State.IDLE: self._in_idle,
            State.DNLOAD_SYNC: self._in_dnload_sync,
            State.DNLOAD_IDLE: self._in_dnload_idle,
            State.MANIFEST_SYNC: self._in_manifest_sync,
            State.MANIFEST_WAIT_RESET: lambda s: None,  # stays, whatever comes
            State.UPLOAD_IDLE: self._in_upload_idle,
            State.ERROR: self._in_error,
        }.get(start)
        if handler is None:
            self._fail(Status.ERR_STALLEDPKT)
        else:
            handler(setup)
        return self.status == Status.OK

    def _fail(self, status: Status) -> None:
        self.state, self.status = State.ERROR, status

    def _alt(self) -> int:
        return self.current_alt.get(0, 0)

    def _in_idle(self, setup: Setup) -> None:
        request = setup.request
        if request == Request.DNLOAD:
            if setup.length == 0:
                return self._fail(Status.ERR_NOTDONE)
            self.fw_len = 0
            self.state = State.DNLOAD_SYNC
            alt = self._alt()
            if alt not in (1, 2):
                return self._fail(Status.ERR_WRITE)  # alt 0: upload to RAM removed
            self.upload_type = alt
            self.app_addr = APP_8005000 if alt == 1 else APP_8002000
            self.unlocked = True
            if alt == 1:
                # so that main.c starts the 0x8005000 image, not an older 0x8002000 one
                self._erase_page(APP_8002000)
            self.dr10 = FLAG_JUST_UPLOADED
        elif request == Request.UPLOAD:
            self.state = State.UPLOAD_IDLE
            self.upload_len = self.block_len = setup.length
            self.fw_len = setup.length * setup.value
            alt = self._alt()
            if alt not in (1, 2):
                return self._fail(Status.ERR_WRITE)
            self.app_addr = APP_8005000 if alt == 1 else APP_8002000
            self.app_end = self.flash_end  # getFlashEnd: the flash-size register
        elif request in (Request.ABORT, Request.GETSTATUS, Request.GETSTATE):
            self.state = State.IDLE
        else:  # CLRSTATUS and DETACH included
            self._fail(Status.ERR_STALLEDPKT)

    def _in_dnload_sync(self, setup: Setup) -> None:
        if setup.request == Request.GETSTATUS:
            self.state = State.DNLOAD_IDLE
            self._write_block()
        elif setup.request != Request.GETSTATE:
            self._fail(Status.ERR_STALLEDPKT)

    def _in_dnload_idle(self, setup: Setup) -> None:
        request = setup.request
        if request == Request.DNLOAD:
            if setup.length > 0:
                self.state = State.DNLOAD_SYNC
            else:
                self.state = State.MANIFEST_SYNC
                self.unlocked = False  # flashLock
        elif request in (Request.ABORT, Request.GETSTATUS, Request.GETSTATE):
            self.state = State.IDLE  # the quirk: the next DNLOAD starts at the base again
        else:
            self._fail(Status.ERR_STALLEDPKT)

    def _in_manifest_sync(self, setup: Setup) -> None:
        if setup.request == Request.GETSTATUS:
            self.state = State.MANIFEST_WAIT_RESET
        elif setup.request != Request.GETSTATE:
            self._fail(Status.ERR_STALLEDPKT)

    def _in_upload_idle(self, setup: Setup) -> None:
        request = setup.request
        if request == Request.UPLOAD:
            if setup.length == 0:
                return self._fail(Status.ERR_NOTDONE)
            self.fw_len = (self.upload_len * setup.value) & 0xFFFFFFFF
            if self.app_addr + self.fw_len + self.upload_len <= self.app_end:
                self.block_len = self.upload_len
            else:
                # thisBlockLen is 16 bits: past the end the difference wraps
                left = (self.app_end - self.app_addr - self.fw_len) & 0xFFFF
                self.block_len = 0 if left >= setup.length else left
                self.state = State.IDLE
        elif request == Request.ABORT:
            self.state = State.IDLE
        elif request not in (Request.GETSTATUS, Request.GETSTATE):
            self._fail(Status.ERR_STALLEDPKT)

    def _in_error(self, setup: Setup) -> None:
        if setup.request == Request.CLRSTATUS:
            self.state, self.status = State.IDLE, Status.OK
        elif setup.request not in (Request.GETSTATUS, Request.GETSTATE):
            self._fail(Status.ERR_STALLEDPKT)

    def _copy(self, setup: Setup, data: bytes) -> bytes:
        """usbDataSetup's copy routines, run only for a request that was accepted."""
        request = setup.request
        if request == Request.GETSTATUS:
            return StatusReply(self.status, 0, self.state, 0).pack()
        if request == Request.GETSTATE:
            return bytes([self.state])
        if request == Request.DNLOAD and setup.length:
            # dfuCopyDNLOAD: into the page buffer; what does not fit is lost (UNCONFIRMED:
            # on the chip it overruns the variables behind the buffer)
            kept = data[:RECV_BUFFER]
            self.recv[: len(kept)] = kept
            self.block_len = setup.length
            return b""
        if request == Request.UPLOAD:
            length = min(self.block_len, setup.length)
            return self.memory(self.app_addr + self.fw_len, length) if length else b""
        return b""

    def _write_block(self) -> None:
        """dfuCopyBufferToExec: erase the page the block starts in, program the block
        as words read from the page buffer (past its end: zeros)."""
        base = APP_8005000 if self.upload_type == 1 else APP_8002000
        address = base + self.fw_len
        self._erase_page(address)
        buffer = bytes(self.recv) + bytes(max(0, self.block_len + 4 - RECV_BUFFER))
        for offset in range(0, self.block_len, 4):
            word = buffer[offset : offset + 4]
            self._program_half(address + offset + 2, int.from_bytes(word[2:], "little"))
            self._program_half(address + offset, int.from_bytes(word[:2], "little"))
        self.fw_len += self.block_len
        self.block_len = 0


def parse_faults(specs: list[str]) -> dict[str, set[int]]:
    """``["stall:3", "vanish:9"]`` or ``"stall:3,vanish:9"`` into {kind: {N}}."""
    found: dict[str, set[int]] = {}
    for item in (part.strip() for spec in specs for part in spec.split(",")):
        if not item:
            continue
        kind = item.partition(":")[0].lower()
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {item!r} for sim://maple; valid: {OPTIONS['fault']}")
        found.setdefault(kind, set()).add(fault_count(item, kind, item.partition(":")[2]))
    return found
