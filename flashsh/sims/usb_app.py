"""A board running Klipper over USB, as the bus sees it: a CDC-ACM device (1d50:614e)
that reboots into its bootloader on the 1200-baud touch.

Klipper's USB code reboots when the line coding says 1200 baud while DTR is low, checked
on both SET_LINE_CODING and SET_CONTROL_LINE_STATE (src/generic/usb_cdc.c check_reboot;
klipper-flash-usb.md §4). The board then leaves the bus and comes back at the same port
as the bootloader it was built for. The simulated bootloaders come back as this device
after a ``leave`` or a reset with a valid application, so a session can be followed
across both directions.
"""

from __future__ import annotations

import struct

from flashsh.sims.board import number_option, option_values
from flashsh.sims.usb_device import AltSetting, Endpoint, Identity, Setup, SimUsbDevice, Stall

SET_LINE_CODING = 0x20
GET_LINE_CODING = 0x21
SET_CONTROL_LINE_STATE = 0x22
DTR = 0x01

#: What Klipper reports as its MCU on the boards each bootloader is found on.
DEFAULT_MCU = {"dfuse": "stm32f407xx", "maple": "stm32f103xe", "hid": "stm32f103xe"}

OPTIONS = {
    "bootloader": "the simulator the touch reboots into: dfuse (default), maple, hid",
    "chip": "passed on to the bootloader simulator",
    "serial": "USB serial number (Klipper reports the chip's unique id)",
    "throttle": "1 = real time (default), 0 = no delays",
}


class KlipperUsbApp(SimUsbDevice):
    """Klipper firmware on USB. ``bootloader`` is the device the 1200-baud touch turns
    the board into (None: the board only reboots into itself)."""

    def __init__(
        self,
        bootloader: SimUsbDevice | None = None,
        *,
        serial: str = "3A0019000F51383234303238",
        mcu: str = "stm32f407xx",
        throttle: bool = False,
    ) -> None:
        super().__init__(throttle=throttle)
        self.identity = Identity(0x1D50, 0x614E, 0x0100, "Klipper", mcu, serial, device_class=2)
        self.alt_settings = (
            AltSetting(0, 0, 0x02, 0x02, 0x01, endpoints=(Endpoint(0x82, 3, 16, 255),)),
            AltSetting(1, 0, 0x0A, 0x00, 0x00, endpoints=(Endpoint(0x01, 2), Endpoint(0x81, 2))),
        )
        self.bootloader = bootloader
        self.mcu = mcu
        self.baud = 250000
        self.lines = 0
        #: Set when a touch rebooted the board.
        self.rebooted = False

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> KlipperUsbApp:
        one = option_values("klipper-usb", options, OPTIONS)
        throttle = bool(number_option("throttle", one.get("throttle", "1")))
        kind = one.get("bootloader", "dfuse")
        # The bootloader comes back as Klipper once it starts the application.
        query = f"throttle={int(throttle)}&app=klipper"
        query += f"&chip={one['chip']}" if "chip" in one else ""
        from flashsh.sims.usb_bus import make_device

        bootloader = make_device(f"sim://{kind}?{query}")
        serial = one.get("serial", "3A0019000F51383234303238")
        mcu = getattr(getattr(bootloader, "rom_chip", None), "klipper_mcu", None)
        mcu = mcu or DEFAULT_MCU.get(kind, "stm32f407xx")
        return cls(bootloader, throttle=throttle, serial=serial, mcu=mcu)

    def on_plug(self) -> None:
        self.baud = 250000
        self.lines = 0
        self.rebooted = False

    def control(self, setup: Setup, data: bytes) -> bytes:
        if setup.kind != 1:
            return super().control(setup, data)
        if setup.request == SET_LINE_CODING and len(data) >= 7:
            self.baud = struct.unpack_from("<I", data)[0]
        elif setup.request == SET_CONTROL_LINE_STATE:
            self.lines = setup.value
        elif setup.request == GET_LINE_CODING:
            return struct.pack("<IBBB", self.baud, 0, 0, 8)
        else:
            raise Stall(f"CDC request {setup.request} not supported")
        self._check_reboot()
        return b""

    def _check_reboot(self) -> None:
        if self.baud == 1200 and not self.lines & DTR and not self.rebooted:
            self.rebooted = True
            self.reenumerate(self.bootloader or self, after=0.1)
