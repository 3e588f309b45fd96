"""PJRC's HalfKay bootloader on an AVR Teensy as a simulated USB device: ``sim://halfkay``.

Modelled on docs/protocols/halfkay.md:

- One HID interface whose report descriptor names the board by its usage (page 0xFF9C);
  one kind of output report, taken by SET_REPORT: the model's address header, then one
  block. A report of another length is refused with a stall.
- The first block after HalfKay starts erases the whole application flash. The erase
  runs on after the transfer has finished, and a block that arrives meanwhile is
  answered with STALL, as HalfKay does when written to too quickly; the first block is
  programmed once the erase is done. Every later block is written (page erase and
  write, UNCONFIRMED) before its transfer completes.
- Blocks at or above the application's end (HalfKay's own space) are ignored. A header
  of FF FF reboots into the application, which leaves the bus: an AVR sketch has no USB.

Time: with ``throttle=1`` the erase runs in real time; with ``throttle=0`` time moves
only with the transfers, and a block refused during the erase lets the rest of the
erase pass, as if the host had kept retrying until it ended.
"""

from __future__ import annotations

import time

from flashsh.chips.teensy import TeensyModel, teensy_model, teensy_models
from flashsh.sims.board import number_option, option_values
from flashsh.sims.hid_bootloader import UsbFaults, hid_descriptor
from flashsh.sims.usb_device import AltSetting, Endpoint, Identity, Setup, SimUsbDevice, Stall

HID_CLASS = 3
SET_REPORT = 0x09
GET_DESCRIPTOR = 0x06
REPORT_DESCRIPTOR = 0x22
INTERRUPT = 3

OPTIONS = {
    "model": "teensypp2 (Teensy++ 2.0, AT90USB1286; default), teensy2 (Teensy 2.0, "
    "ATmega32U4), teensy1, teensypp1",
    "usage": "the HID usage the report descriptor names (default: the model's; 0 makes "
    "the host fall back to --chip)",
    "fault": "stall:N, timeout:N or vanish:N at the Nth output report",
    "throttle": "1 = real time (default), 0 = no delays",
}


def report_descriptor(usage: int, report_size: int) -> bytes:
    """A vendor-page collection with one output report of ``report_size`` bytes. Only
    the usage page 0xFF9C and the usage are documented (halfkay.md §1); the rest of
    HalfKay's descriptor is UNCONFIRMED."""
    count = report_size.to_bytes(2, "little")
    return bytes(
        [0x06, 0x9C, 0xFF, 0x09, usage, 0xA1, 0x01,  # usage page FF9C, usage, application
         0x0A, 0x19, 0x00, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08,
         0x96, *count, 0x91, 0x02,  # output report of report_size bytes
         0xC0]
    )  # fmt: skip


class HalfKaySim(SimUsbDevice):
    OPTIONS = OPTIONS

    def __init__(
        self,
        model: str = "teensypp2",
        *,
        usage: int | None = None,
        faults: UsbFaults | None = None,
        throttle: bool = False,
    ) -> None:
        super().__init__(throttle=throttle)
        self.model: TeensyModel = teensy_model(model)
        self.faults = faults or UsbFaults()
        self.usage = self.model.usage if usage is None else usage
        self.report_descriptor = report_descriptor(self.usage, self.model.report_size)
        # HalfKay gives no strings and no usable serial number (halfkay.md §1).
        self.identity = Identity(0x16C0, 0x0478, 0x0100)
        self.alt_settings = (
            AltSetting(0, 0, HID_CLASS, 0, 0,
                       endpoints=(Endpoint(0x81, INTERRUPT, 64, 1),),  # UNCONFIRMED
                       extra=hid_descriptor(len(self.report_descriptor))),
        )  # fmt: skip
        size, code = self.model.flash_size, self.model.code_size
        # An earlier program below, HalfKay above: both show whether they were touched.
        self.flash = bytearray((b"OLD-SKETCH" * (code // 10 + 1))[:code])
        self.flash += (b"HALFKAY!" * ((size - code) // 8 + 1))[: size - code]
        self.reports = 0
        self.blocks: list[int] = []
        self.stalls = 0
        self.ignored: list[int] = []
        self.erases = 0
        self.reboots = 0
        self._power_on()

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> HalfKaySim:
        one = option_values("halfkay", options, OPTIONS)
        name = one.get("model", "teensypp2").lower()
        avr = [key for key, m in teensy_models().items() if m.supported]
        if name not in avr:
            raise ValueError(f"option model={name!r}; valid: {', '.join(avr)}")
        usage = None
        if "usage" in one:
            try:
                usage = int(one["usage"], 0)
            except ValueError:
                raise ValueError(f"option usage={one['usage']!r} needs a number") from None
        return cls(
            name,
            usage=usage,
            faults=UsbFaults.parse(options.get("fault", []), acks=False),
            throttle=bool(number_option("throttle", one.get("throttle", "1"))),
        )

    def _power_on(self) -> None:
        self.erased = False
        self.busy_until = 0.0
        self.first_block: tuple[int, bytes] | None = None

    def on_plug(self) -> None:
        self._power_on()

    # ------------------------------------------------------------ time

    def _now(self) -> float:
        """Real time while throttled (the erase runs beside the host's retries),
        modelled time otherwise."""
        return time.monotonic() if self.throttle else self.elapsed

    def _busy(self) -> bool:
        if self._now() < self.busy_until:
            return True
        if self.first_block is not None:
            address, data = self.first_block
            self.first_block = None
            self._store(address, data)
        return False

    @property
    def page_s(self) -> float:
        return self.model.page_ms[0] / 1000

    # ------------------------------------------------------------ requests

    def control(self, setup: Setup, data: bytes) -> bytes:
        standard = setup.kind == 0 and setup.request == GET_DESCRIPTOR
        if standard and setup.value >> 8 == REPORT_DESCRIPTOR:
            return self.report_descriptor[: setup.length]
        if setup.kind == 1 and setup.request == SET_REPORT and not setup.device_to_host:
            self._report(data)
            return b""
        return super().control(setup, data)

    def _report(self, data: bytes) -> None:
        self.reports += 1
        self.faults.at_report(self, self.reports)
        model = self.model
        if len(data) != model.report_size:
            raise Stall(f"a {len(data)}-byte report; HalfKay takes {model.report_size}")
        if self._busy():
            self.stalls += 1
            if not self.throttle:
                self.elapsed = max(self.elapsed, self.busy_until)
            raise Stall("busy erasing")
        header = data[: model.header_size]
        if header[:2] == b"\xff\xff":
            self.reboots += 1
            self.vanish()  # the sketch runs; it has no USB
            return
        address = model.address_of(header)
        block = bytes(data[model.header_size :])
        if not self.erased:
            self.erased = True
            self.erases += 1
            pages = model.code_size // model.block_size
            self.flash[: model.code_size] = b"\xff" * model.code_size
            self.busy_until = self._now() + pages * self.page_s
            self.first_block = (address, block)
            return
        self.spend(self.page_s)
        self._store(address, block)

    def _store(self, address: int, block: bytes) -> None:
        if address + len(block) > self.model.code_size or address % self.model.block_size:
            self.ignored.append(address)  # HalfKay's own space: UNCONFIRMED, not written
            return
        self.flash[address : address + len(block)] = block
        self.blocks.append(address)

    def settle(self) -> None:
        """Let a running erase finish and its first block land (tests)."""
        with self.lock:
            if self.throttle:
                time.sleep(max(0.0, self.busy_until - time.monotonic()))
            else:
                self.elapsed = max(self.elapsed, self.busy_until)
            self._busy()
