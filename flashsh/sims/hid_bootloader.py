"""The STM32 HID bootloader (1209:beba) as a simulated USB device: ``sim://hid``.

Modelled on the firmware (docs/protocols/hid-bootloader.md):

- F1 builds take each output report as eight 8-byte EP0 packets inside the SET_REPORT
  transfer and handle them in the USB interrupt: a command is recognised only as the
  first 64 bytes of a flash page; a full page buffer is erased and programmed right there
  (the transfer lasts that long), and an acknowledgement is queued whenever the page
  offset comes back to 0 (after a page, and after RESET_PAGES) or reaches 1024 (the
  middle of a 2 KiB page). There is no RESET_PAGES acknowledgement on the F4.
- F4 builds copy each report into one receive buffer and flag it; the main loop takes it
  from there. While the main loop erases a sector and programs a KiB, the USB interrupt
  goes on accepting reports into the same buffer, so a host that does not wait for the
  acknowledgement loses all but the last of them. The upstream build reads a command in
  any report that starts with ``BTLDCMD``; the fork only at a KiB boundary.
- Both write strictly in sequence from the application start, acknowledge through one
  8-byte IN buffer (a second acknowledgement before the host read the first is lost),
  and leave the bus on REBOOT_MCU.

Time: every transfer is charged as full-speed USB, every erase and program as the
datasheet's typical time (flashsh.chips.stm32). Time moves only with device activity; a
host's own pauses are not seen, which is conservative for the F4's buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashsh.chips.stm32 import Stm32Chip, stm32_part
from flashsh.sims.board import number_option, option_values
from flashsh.sims.faults import fault_count
from flashsh.sims.usb_device import (
    FRAME_S,
    AltSetting,
    Endpoint,
    Gone,
    Identity,
    Setup,
    Silent,
    SimUsbDevice,
    Stall,
)

FLASH_BASE = 0x08000000
SIGNATURE = b"BTLDCMD"
REPORT_SIZE = 64
KIB = 1024
HID_CLASS = 3
SET_REPORT = 0x09
GET_DESCRIPTOR = 0x06
REPORT_DESCRIPTOR = 0x22
IN_ENDPOINT = 0x81
OUT_ENDPOINT = 0x01
ISOCHRONOUS = 1
INTERRUPT = 3
#: F4 main loop: the KiB indices whose write starts with a sector erase (main.c).
F4_ERASE_AT = (16, 32, 48, 64)
#: REBOOT_MCU to leaving the bus: the F4 waits 100 ms (HAL_Delay); the F1's main loop
#: notices the flag within a poll. The real re-enumeration time is UNCONFIRMED.
REBOOT_S = 0.1

OPTIONS = {
    "build": "f1 (1 KiB pages, default), f1hd (2 KiB pages) or f4",
    "variant": "upstream (Serasidis) or fork (Arksine; default for f1hd and f4)",
    "chip": "an STM32 part (stm32f103rc): flash size and timing; picks the build",
    "flash": "flash size in KiB (default: the part's, 64 for f1, 256 f1hd, 1024 f4)",
    "version": "bcdDevice (default 0x0300; hid-flash and flashsh refuse older)",
    "outep": "how the F4's OUT endpoint is declared: iso (as built, default) or interrupt",
    "app": "after REBOOT_MCU with a valid application: none (leaves the bus, default) "
    "or klipper (comes back as Klipper on USB, sim://klipper-usb)",
    "fault": "stall:N, timeout:N or vanish:N at the Nth output report; noack or noack:N "
    "(no acknowledgement from the Nth on)",
    "throttle": "1 = real time (default), 0 = no delays",
}

#: (bootloader bytes, application start) per family.
LAYOUT = {"f1": (0x800, 0x08000800), "f4": (0x4000, 0x08004000)}
DEFAULT_PART = {"f1": "stm32f103c8", "f1hd": "stm32f103rc", "f4": "stm32f407vg"}
FAMILY = {"f1": "f1", "f1hd": "f1", "f4": "f4"}
KLIPPER_MCU = {"f1": "stm32f103xe", "f4": "stm32f407xx"}

# Report descriptors as the builds serve them. F1: vendor page 0xFF00, 8-byte input and
# 64-byte output report (bootloader/F1/Src/hid.c). F4: the same sizes, constant items
# (bootloader/F4/Src/usbd_custom_hid_if.c).
F1_REPORT_DESCRIPTOR = bytes(
    [0x06, 0x00, 0xFF, 0x09, 0x01, 0xA1, 0x01,  # usage page FF00, usage 1, application
     0x09, 0x02, 0x15, 0x00, 0x25, 0xFF, 0x75, 0x08, 0x95, 0x08, 0x81, 0x02,  # 8 in
     0x09, 0x03, 0x15, 0x00, 0x25, 0xFF, 0x75, 0x08, 0x95, 0x40, 0x91, 0x02,  # 64 out
     0xC0]
)  # fmt: skip
F4_REPORT_DESCRIPTOR = bytes(
    [0x06, 0x00, 0xFF, 0x09, 0x00, 0xA1, 0x01,
     0x75, 0x08, 0x95, 0x40, 0x91, 0x03,  # 64-byte output report
     0x75, 0x08, 0x95, 0x08, 0x81, 0x03,  # 8-byte input report
     0xC0]
)  # fmt: skip


def hid_descriptor(report_length: int) -> bytes:
    """The HID class descriptor that follows the interface descriptor."""
    return bytes([9, 0x21, 0x11, 0x01, 0, 1, REPORT_DESCRIPTOR]) + report_length.to_bytes(
        2, "little"
    )


@dataclass
class UsbFaults:
    """Faults at the Nth output report (counted from 1 across re-plugs)."""

    stall: set[int] = field(default_factory=set)
    timeout: set[int] = field(default_factory=set)
    vanish: set[int] = field(default_factory=set)
    #: No acknowledgement from the Nth on.
    noack_from: int | None = None

    @classmethod
    def parse(cls, specs: list[str], *, acks: bool = True) -> UsbFaults:
        faults = cls()
        kinds = "stall:N, timeout:N, vanish:N" + (", noack, noack:N" if acks else "")
        for item in (part.strip() for spec in specs for part in spec.split(",")):
            if not item:
                continue
            kind, _, arg = item.partition(":")
            kind = kind.lower()
            if kind == "noack" and acks:
                faults.noack_from = fault_count(item, kind, arg) if arg else 1
            elif kind in ("stall", "timeout", "vanish"):
                getattr(faults, kind).add(fault_count(item, kind, arg))
            else:
                raise ValueError(f"unknown fault {item!r}; valid: {kinds}")
        return faults

    def at_report(self, device: SimUsbDevice, number: int) -> None:
        """Raise what the Nth report meets, if anything."""
        if number in self.vanish:
            device.vanish()
            raise Gone(f"left the bus at report {number}")
        if number in self.stall:
            raise Stall(f"report {number} stalled")
        if number in self.timeout:
            raise Silent(f"report {number} not answered")


class HidBootloaderSim(SimUsbDevice):
    OPTIONS = OPTIONS

    def __init__(
        self,
        *,
        build: str = "f1",
        variant: str | None = None,
        part: str | None = None,
        flash_kib: int | None = None,
        version: int = 0x0300,
        out_interrupt: bool = False,
        app: str = "none",
        faults: UsbFaults | None = None,
        throttle: bool = False,
    ) -> None:
        super().__init__(throttle=throttle)
        self.family = FAMILY[build]
        self.variant = variant or ("upstream" if build == "f1" else "fork")
        self.chip: Stm32Chip = stm32_part(part or DEFAULT_PART[build])
        #: F1: the flash page the firmware buffers; F4: one KiB at a time.
        self.page_size = 2048 if build == "f1hd" else KIB
        self.app = app
        self.faults = faults or UsbFaults()
        boot_size, self.app_start = LAYOUT[self.family]
        size = flash_kib * KIB if flash_kib else self.chip.flash_size
        self.flash = bytearray(b"\xff") * size
        # Something recognisable where the bootloader lives, to show it is never touched.
        self.flash[:boot_size] = (b"HIDBOOT!" * (boot_size // 8))[:boot_size]
        self._identity(version, out_interrupt)
        # What tests read.
        self.reports = 0
        self.acks_sent = 0
        self.acks_lost = 0
        self.reports_lost = 0
        self.commands: list[str] = []
        self.written: list[int] = []
        self.erased: list[int] = []
        self.reboots = 0
        self.beyond_flash = 0
        self._power_on()

    def _identity(self, version: int, out_interrupt: bool) -> None:
        if self.family == "f1":
            product = "STM32F HID Bootloader" if self.variant == "upstream" else "HID Bootloader"
            self.identity = Identity(
                0x1209, 0xBEBA, version, "www.serasidis.gr", product, None,
                bcd_usb=0x0110, max_packet0=8,
            )  # fmt: skip
            self.report_descriptor = F1_REPORT_DESCRIPTOR
            endpoints: tuple[Endpoint, ...] = (Endpoint(IN_ENDPOINT, INTERRUPT, 8, 5),)
        else:
            self.identity = Identity(
                0x1209, 0xBEBA, version, "www.serasidis.gr", "STM32 HID bootloader",
                "1234567890", max_packet0=64,
            )  # fmt: skip
            self.report_descriptor = F4_REPORT_DESCRIPTOR
            # Every F4 build declares the OUT endpoint isochronous while opening it as
            # interrupt (usbd_customhid.c); hidapi then writes through SET_REPORT.
            out_type = INTERRUPT if out_interrupt else ISOCHRONOUS
            endpoints = (
                Endpoint(IN_ENDPOINT, INTERRUPT, 8, 0x20),
                Endpoint(OUT_ENDPOINT, out_type, 64, 0x20),
            )
        self.alt_settings = (
            AltSetting(0, 0, HID_CLASS, 0, 0, endpoints=endpoints,
                       extra=hid_descriptor(len(self.report_descriptor))),
        )  # fmt: skip
        self.config_attributes = 0xC0

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> HidBootloaderSim:
        one = option_values("hid", options, OPTIONS)
        part = one.get("chip")
        build = one.get("build", "").lower()
        if part:
            try:
                chip = stm32_part(part)
            except Exception as exc:
                raise ValueError(f"option chip={part!r}: {exc}") from None
            if chip.family not in ("f1", "f4"):
                raise ValueError(f"option chip={part!r}: the HID bootloader is for F1 and F4")
            fits = chip.family if chip.family == "f4" else "f1"
            if fits == "f1" and chip.erase_units[0].size == 2048:
                fits = "f1hd"
            if build and build != fits:
                raise ValueError(f"option chip={part!r} needs build={fits}, not {build}")
            build = fits
        build = build or "f1"
        if build not in DEFAULT_PART:
            raise ValueError(f"option build={build!r}: f1, f1hd or f4")
        variant = one.get("variant")
        if variant not in (None, "upstream", "fork"):
            raise ValueError(f"option variant={variant!r}: upstream or fork")
        outep = one.get("outep", "iso")
        if outep not in ("iso", "interrupt"):
            raise ValueError(f"option outep={outep!r}: iso or interrupt")
        app = one.get("app", "none")
        if app not in ("none", "klipper"):
            raise ValueError(f"option app={app!r}: none or klipper")
        flash = one.get("flash")
        try:
            version = int(one.get("version", "0x0300"), 0)
        except ValueError:
            raise ValueError(f"option version={one['version']!r} needs a number") from None
        return cls(
            build=build,
            variant=variant,
            part=part,
            flash_kib=int(number_option("flash", flash)) if flash else None,
            version=version,
            out_interrupt=outep == "interrupt",
            app=app,
            faults=UsbFaults.parse(options.get("fault", [])),
            throttle=bool(number_option("throttle", one.get("throttle", "1"))),
        )

    # ------------------------------------------------------------ state

    def _power_on(self) -> None:
        """What the firmware sets up when it starts (and the F1 on a USB reset)."""
        self.min_page = (self.app_start - FLASH_BASE) // self.page_size
        self.page = self.min_page  # F1: CurrentPage; F4: current_Page in KiB
        self.offset = 0
        self.buffer = bytearray(self.page_size)
        self.finished = False
        self.erase_sector = 1  # F4: erase_page, the next sector to erase
        self.pending: bytes | None = None  # F4: a report the main loop has not taken
        self.busy_until = self.elapsed
        self.ack: bytes | None = None
        self.ack_at = 0.0

    def on_plug(self) -> None:
        self._power_on()

    def bus_reset(self) -> None:
        super().bus_reset()
        self.ack = None  # the IN endpoint is set up again, its buffer dropped
        if self.family == "f1":
            self.page, self.offset = self.min_page, 0  # USB_Reset

    # ------------------------------------------------------------ requests

    def control(self, setup: Setup, data: bytes) -> bytes:
        standard = setup.kind == 0 and setup.request == GET_DESCRIPTOR
        if standard and setup.value >> 8 == REPORT_DESCRIPTOR:
            return self.report_descriptor[: setup.length]
        if setup.kind == 1 and setup.request == SET_REPORT and not setup.device_to_host:
            self._report(data)
            return b""
        return super().control(setup, data)

    def interrupt_out(self, endpoint: int, data: bytes, timeout: float) -> int:
        with self.lock:
            if self.family != "f4" or endpoint != OUT_ENDPOINT:
                raise Stall(f"no OUT endpoint 0x{endpoint:02x}")
            self.traffic.interrupt_out += 1
            self.spend(FRAME_S)
            self._report(data)
            return len(data)

    def interrupt_in(self, endpoint: int, size: int, timeout: float) -> bytes:
        with self.lock:
            if endpoint != IN_ENDPOINT:
                raise Stall(f"no IN endpoint 0x{endpoint:02x}")
            deadline = self.elapsed + timeout
            while True:
                self._catch_up()
                if self.ack is not None and self.ack_at <= self.elapsed:
                    ack, self.ack = self.ack, None
                    self.traffic.interrupt_in += 1
                    self.spend(FRAME_S)
                    return ack[:size]
                events = [self.ack_at] if self.ack is not None else []
                if self.pending is not None:
                    events.append(self.busy_until)
                if not events or min(events) > deadline:
                    self.spend(max(0.0, deadline - self.elapsed))
                    raise Silent("no acknowledgement")
                self.spend(max(0.0, min(events) - self.elapsed))

    # ------------------------------------------------------------ reports

    def _report(self, data: bytes) -> None:
        self.reports += 1
        self.faults.at_report(self, self.reports)
        if self.family == "f1":
            for at in range(0, len(data), 8):
                self._f1_packet(data[at : at + 8].ljust(8, b"\0"))
            if self.finished:
                self._reboot(valid=self._app_valid())
        else:
            self._catch_up()
            if self.elapsed < self.busy_until:
                # The main loop is still writing: the interrupt overwrites the buffer.
                if self.pending is not None:
                    self.reports_lost += 1
                self.pending = data
            else:
                self._f4_report(data, self.elapsed)

    def _f1_packet(self, packet: bytes) -> None:
        """HIDUSB_HandleData: one 8-byte EP0 packet."""
        self.buffer[self.offset : self.offset + 8] = packet
        self.offset += 8
        if self.offset == REPORT_SIZE:
            head = bytes(self.buffer[:REPORT_SIZE])
            if head[:7] == SIGNATURE and not any(head[8:]):
                if head[7] == 0x00:
                    self.commands.append("RESET_PAGES")
                    self.page, self.offset = self.min_page, 0
                elif head[7] == 0x01:
                    self.commands.append("REBOOT_MCU")
                    self.finished = True
        elif self.offset >= self.page_size:
            address = FLASH_BASE + self.page * self.page_size
            self._program(address, bytes(self.buffer), erase=self.page_size)
            self.page += 1
            self.offset = 0
        if self.offset in (0, KIB):
            code = 0x03 if self.page_size == 2048 and self.variant == "fork" else 0x02
            self._acknowledge(code, self.elapsed)

    def _catch_up(self) -> None:
        """F4: the main loop takes a waiting report once it is done writing."""
        if self.pending is not None and self.elapsed >= self.busy_until:
            report, self.pending = self.pending, None
            self._f4_report(report, self.busy_until)

    def _f4_report(self, report: bytes, at: float) -> None:
        """One pass of the F4 main loop, starting at simulated time ``at``."""
        at_kib = self.offset % KIB == 0
        if report[:7] == SIGNATURE and (self.variant == "upstream" or at_kib):
            if report[7] == 0x00:
                self.commands.append("RESET_PAGES")
                self.page, self.offset, self.erase_sector = 16, 0, 1
            elif report[7] == 0x01:
                self.commands.append("REBOOT_MCU")
                if self.offset > 0:
                    self._f4_write(at)
                self._reboot(valid=True)
            return
        data = report[:REPORT_SIZE].ljust(REPORT_SIZE, b"\0")
        self.buffer[self.offset : self.offset + REPORT_SIZE] = data
        self.offset += REPORT_SIZE
        if self.offset == KIB:
            self._f4_write(at)
            self.page += 1
            self.offset = 0
            self._acknowledge(0x02, self.busy_until)
            if self.variant == "fork":
                self.buffer = bytearray(KIB)

    def _f4_write(self, at: float) -> None:
        """write_flash_sector: erase the next sector when this KiB starts one, then
        program the whole KiB buffer (stale bytes included)."""
        seconds = 0.0
        if self.page in F4_ERASE_AT or self.page % 128 == 0:
            unit = self.chip.unit(self.erase_sector)
            self.erase_sector += 1
            if unit is not None:
                self._erase(unit.address, unit.size)
                seconds += self.chip.erase_ms(unit)[0] / 1000
        address = FLASH_BASE + self.page * KIB
        seconds += self._program(address, bytes(self.buffer), erase=0, spend=False)
        self.busy_until = at + seconds

    def _acknowledge(self, code: int, at: float) -> None:
        if self.faults.noack_from is not None and self.acks_sent + 1 >= self.faults.noack_from:
            return
        self.acks_sent += 1
        if self.ack is not None:
            self.acks_lost += 1  # one IN buffer: the host has not read the last one
            return
        self.ack = SIGNATURE + bytes([code])
        self.ack_at = at

    # ------------------------------------------------------------ flash

    def _erase(self, address: int, size: int) -> None:
        at = address - FLASH_BASE
        size = max(0, min(size, len(self.flash) - at))
        self.flash[at : at + size] = b"\xff" * size
        self.erased.append(address)

    def _program(self, address: int, data: bytes, *, erase: int, spend: bool = True) -> float:
        """Write ``data`` at ``address`` (erasing ``erase`` bytes first); returns the
        chip time taken, which is spent here unless ``spend`` is False."""
        at = address - FLASH_BASE
        if at + len(data) > len(self.flash):
            self.beyond_flash += 1  # UNCONFIRMED what the chip does; nothing is written
            return 0.0
        milliseconds = self.chip.program_ms(len(data))[0]
        if erase:
            self._erase(address, erase)
            unit = self.chip.unit_at(address) or self.chip.erase_units[0]
            milliseconds += self.chip.erase_ms(unit)[0]
        # Flash bits only go from 1 to 0 without an erase.
        old = self.flash[at : at + len(data)]
        self.flash[at : at + len(data)] = bytes(a & b for a, b in zip(old, data, strict=True))
        self.written.append(address)
        seconds = milliseconds / 1000
        if spend:
            self.spend(seconds)
        return seconds

    # ------------------------------------------------------------ leaving

    def _app_valid(self) -> bool:
        """F1 check_user_code: the initial stack pointer must point into SRAM."""
        at = self.app_start - FLASH_BASE
        sp = int.from_bytes(self.flash[at : at + 4], "little")
        return sp & 0x2FFE0000 == 0x20000000

    def _reboot(self, *, valid: bool) -> None:
        """The chip resets: the F1 stays in the bootloader without a valid application;
        otherwise the application runs (Klipper comes back on USB, anything else is
        simply gone)."""
        self.reboots += 1
        after = REBOOT_S if self.throttle else 0.02
        if not valid:
            self.reenumerate(self, after=after)
        elif self.app == "klipper":
            self.reenumerate(self._klipper(), after=after)
        else:
            self.vanish()

    def _klipper(self) -> SimUsbDevice:
        from flashsh.sims.usb_app import KlipperUsbApp

        return KlipperUsbApp(self, mcu=KLIPPER_MCU[self.family], throttle=self.throttle)

    def image(self, length: int) -> bytes:
        """``length`` bytes of flash from the application start (tests)."""
        at = self.app_start - FLASH_BASE
        return bytes(self.flash[at : at + length])
