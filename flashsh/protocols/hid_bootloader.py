"""The STM32 "HID bootloader" (USB 1209:beba): Serasidis/STM32_HID_Bootloader and the
Arksine fork that BTT boards ship, as Klipper's hid-flash drives it.

The device takes the raw image as 64-byte HID output reports and writes the bytes one
after another from the application start: no addresses, no lengths, no read-back. flashsh
sends RESET_PAGES, then the image in 1 KiB chunks of 16 reports, each chunk acknowledged
by an 8-byte input report (``BTLDCMD`` and 0x02, or 0x03 from 2 KiB-page builds), and
REBOOT_MCU to start the application. Facts and sources: docs/protocols/hid-bootloader.md.

The two builds are told apart by their descriptors:

- F1 (STM32F103): 2 KiB bootloader, application at 0x08000800, no OUT endpoint, so
  reports go as HID SET_REPORT control transfers. A command is recognised only as the
  first report of a flash page, and RESET_PAGES is acknowledged like a page.
- F4 (STM32F405/407/446): 16 KiB bootloader, application at 0x08004000, an OUT endpoint
  0x01. Every build declares that endpoint isochronous, so hidapi (and flashsh) send the
  reports as SET_REPORT there too; an interrupt OUT endpoint is written directly. No
  acknowledgement for RESET_PAGES.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from flashsh.chips.stm32 import Stm32Chip, stm32_part
from flashsh.errors import (
    FlashshError,
    ImageError,
    NoAnswerError,
    ProtocolError,
    TargetError,
    UnsupportedError,
)
from flashsh.images.image import Image
from flashsh.images.klipper_dict import klipper_build
from flashsh.images.vectors import check_vector_table
from flashsh.numbers import hexaddr, human_size
from flashsh.protocols.base import Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.usb_base import UsbBootloader
from flashsh.transports.usb import DeviceGone

FLASH_BASE = 0x08000000
REPORT_SIZE = 64
ACK_SIZE = 8
#: Bytes per acknowledged chunk: hid-flash's SECTOR_SIZE, 16 reports.
CHUNK = 1024
SIGNATURE = b"BTLDCMD"
RESET_PAGES = 0x00
REBOOT_MCU = 0x01
#: Acknowledgement codes: "send the next KiB"; 0x03 from the fork's 2 KiB-page F1 builds.
ACK_NEXT = 0x02
ACK_NEXT_2K = 0x03
#: hid-flash refuses older bootloaders, whose protocol differs.
MIN_VERSION = 0x0300
#: Longest wait for one acknowledgement: an F4 erases a 128 KiB sector (2 s at most at
#: 32-bit parallelism, STM32F405/407 datasheet) before it writes the KiB that starts it.
ACK_TIMEOUT = 5.0
#: Stale acknowledgements are drained with this short wait before a transfer.
DRAIN_TIMEOUT_MS = 20
IN_ENDPOINT = 0x81
HID_CLASS = 3
HID_OUT_REQUEST = 0x21  # class request to the interface, host to device
SET_REPORT = 0x09
OUTPUT_REPORT_0 = 0x0200  # report type Output, report id 0
#: What the F1 bootloader checks before it starts an application: the initial stack
#: pointer, masked, must point into SRAM (bootloader/F1/Src/main.c check_user_code).
SP_MASK = 0x2FFE0000
SRAM_BASE = 0x20000000


@dataclass(frozen=True)
class HidBuild:
    """What one build of the bootloader fixes."""

    family: str  # "f1" or "f4", as flashsh.chips.stm32 names families
    label: str
    app_start: int
    #: The flash size assumed when --chip does not say: the smallest part the build
    #: is made for, so that an image too large for the board is refused, not cut.
    default_part: str


F1 = HidBuild("f1", "F1", 0x08000800, "stm32f103c8")
F4 = HidBuild("f4", "F4", 0x08004000, "stm32f407ve")


def command(code: int) -> bytes:
    """A command report: the signature, the code, zeros to 64 bytes (the F1 build also
    checks that the 56 trailing bytes are zero)."""
    return (SIGNATURE + bytes([code])).ljust(REPORT_SIZE, b"\0")


class HidBootloader(UsbBootloader):
    name = "hid"
    kinds = ("hid",)
    capabilities = Capability.WRITE | Capability.PAGE_ERASE_ON_WRITE
    after_start = (
        "the board runs its application; the next command waits for the HID bootloader "
        "to come back (reset the board into it)"
    )
    no_read_reason = (
        "the HID bootloader has no read command; flashsh checks every chunk was acknowledged"
    )

    def __init__(self, link: Any) -> None:
        super().__init__(link)
        self.build = F1
        self.version = 0
        self.interface = 0
        #: The interrupt OUT endpoint to write reports to; None: SET_REPORT on EP0.
        self.out_endpoint: int | None = None
        #: The part --chip names; None when the flash size is a guess.
        self.chip: Stm32Chip | None = None
        #: Where the device writes the next byte; None while no transfer is open.
        self._next: int | None = None
        #: The last acknowledgement code (0x02 or 0x03).
        self._ack = 0
        #: The F1's page counter may be anywhere (no clean transfer ended since start).
        self._resync = True

    # ------------------------------------------------------------ connecting

    def start(self) -> None:
        info = self.link.info
        self.version = int(self.link.device.bcdDevice)
        if self.version < MIN_VERSION:
            raise ProtocolError(
                f"the HID bootloader on {info.usb_id} at {info.port} is version "
                f"{_bcd(self.version)}, older than the protocol flashsh speaks",
                "update the bootloader to v3.00 or later (as hid-flash asks)",
            )
        interface = next(
            (i for i in self.link.interfaces() if i.bInterfaceClass == HID_CLASS), None
        )
        if interface is None:
            raise ProtocolError(f"{info.usb_id} at {info.port} has no HID interface")
        outs = [e for e in interface if not e.bEndpointAddress & 0x80]
        self.build = F4 if outs else F1
        interrupt_outs = [e for e in outs if e.bmAttributes & 3 == 3]
        self.out_endpoint = interrupt_outs[0].bEndpointAddress if interrupt_outs else None
        self.interface = interface.bInterfaceNumber
        # Detaches the kernel's HID driver, which binds the device on Linux.
        self.link.claim(self.interface)
        self.chip = self._chip(self.chip_hint)
        self._next = None
        # Whatever came before (another tool, a transfer cut short) may have left the
        # F1 in the middle of a page, where it would take RESET_PAGES for data.
        self._resync = True

    def _chip(self, name: str | None) -> Stm32Chip | None:
        if not name:
            return None
        chip = stm32_part(name)
        if chip.family != self.build.family:
            raise TargetError(
                f"--chip {name} is an {chip.family_name}, but this HID bootloader is an "
                f"{self.build.label} build (its application starts at "
                f"{hexaddr(self.build.app_start)})",
                "give the board's part, or leave out --chip",
            )
        return chip

    @property
    def flash_size(self) -> int:
        return (self.chip or stm32_part(self.build.default_part)).flash_size

    @property
    def page_size(self) -> int | None:
        """The F1's flash page (1 or 2 KiB) when known from --chip; None otherwise."""
        if self.chip is None or self.build is not F1:
            return None
        return self.chip.erase_units[0].size

    def identify(self) -> TargetInfo:
        info = self.link.info
        if self.chip is not None:
            chip = self.chip.name
        else:
            chip = f"{stm32_part(self.build.default_part).family_name} (flash size unknown)"
        output = (
            f"interrupt OUT 0x{self.out_endpoint:02x}"
            if self.out_endpoint is not None
            else "SET_REPORT on EP0"
        )
        return TargetInfo(
            protocol=self.name,
            bootloader=f"STM32 HID bootloader v{_bcd(self.version)} ({self.build.label} build)",
            chip=chip,
            link=self.link.description,
            how=f"USB {info.usb_id} at {info.port}",
            details={
                "usb_id": info.usb_id,
                "port": info.port,
                "product": info.product,
                "build": self.build.label,
                "application_start": hexaddr(self.build.app_start),
                "flash_size": human_size(self.flash_size)
                + ("" if self.chip else " (assumed; --chip gives the real size)"),
                "page_size": human_size(self.page_size) if self.page_size else "not known",
                "reports": output,
            },
        )

    def memory_map(self) -> MemoryMap:
        start = self.build.app_start
        erase = self.page_size or (CHUNK if self.build is F1 else 0x4000)
        flash = Region("flash", FLASH_BASE, self.flash_size, CHUNK, erase, access="w")
        hint = None
        if self.chip is None:
            part = stm32_part(self.build.default_part)
            hint = (
                f"flashsh assumes {human_size(part.flash_size)} ({part.name}) because the "
                "HID bootloader cannot say: give the board's part with --chip, e.g. "
                + ("--chip stm32f103rc" if self.build is F1 else "--chip stm32f407vg")
            )
        return MemoryMap(
            (flash,),
            bootloader=(FLASH_BASE, start),
            app_start=start,
            app_start_fixed=True,
            size_hint=hint,
        )

    def keep_alive(self) -> None:
        if self.link.gone():
            raise ProtocolError(f"the HID bootloader left the bus ({self.link.description})")

    # ------------------------------------------------------------ images

    def check_image(self, image: Image) -> None:
        """The image must be a vector table linked for the application start (the F1
        build starts only an image whose stack pointer lies in SRAM), and a Klipper build
        for this family."""
        name = image.source or "the image"
        start = self.build.app_start
        build = klipper_build(image)
        if build is not None and not build.mcu.lower().startswith(f"stm32{self.build.family}"):
            raise ImageError(
                f"{name} is Klipper {build.version} built for {build.mcu}, but this HID "
                f"bootloader is an {self.build.label} build",
                "build Klipper for this board (make menuconfig: the micro-controller)",
            )
        hint = (
            f"build it for {hexaddr(start)} (Klipper: the "
            f"{human_size(start - FLASH_BASE)} bootloader offset in menuconfig), or add "
            "`force` to write it anyway"
        )
        # The F1 build starts only an image whose stack pointer passes its own mask.
        check_vector_table(image, start, sp_ok=lambda sp: sp & SP_MASK == SRAM_BASE, hint=hint)

    # ------------------------------------------------------------ no reading

    def read(self, region: Region, address: int, length: int) -> bytes:
        raise UnsupportedError(f"{self.name} cannot read {region.name}", self.no_read_reason)

    def erase_units(self, region: Region, start: int, end: int) -> list[tuple[int, int]]:
        """The device writes only from the application start on, so clearing any range
        rewrites everything from there: one unit [application start, end)."""
        first = min(start - (start - region.start) % CHUNK, self.build.app_start)
        last = end + (-(end - region.start)) % CHUNK
        return [(first, last)]

    # ------------------------------------------------------------ writing

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        """Send the KiB chunks of ``data``; a gap since the last chunk is sent as 0xFF,
        because the device writes every byte it gets in sequence."""
        try:
            if self._next is None:
                self._begin()
            assert self._next is not None
            if address < self._next:
                raise TargetError(
                    f"the HID bootloader writes in one pass from "
                    f"{hexaddr(self.build.app_start)}; {hexaddr(address)} comes after "
                    f"{hexaddr(self._next)} was written",
                    "program the whole image in one go",
                )
            while self._next < address:
                self._send_chunk(self._next, b"\xff" * CHUNK)
            for offset in range(0, len(data), CHUNK):
                chunk = data[offset : offset + CHUNK].ljust(CHUNK, b"\xff")
                self._send_chunk(address + offset, chunk)
        except FlashshError:
            self._abandon()
            raise

    def finish_writes(self) -> None:
        """Complete a half-filled 2 KiB page, which the F1 would otherwise never write."""
        if self._next is None:
            return
        try:
            if self._whole_2k_pages() and (self._next - self.build.app_start) % 2048:
                self._send_chunk(self._next, b"\xff" * CHUNK)
        except FlashshError:
            self._abandon()
            raise
        self._next = None

    def _whole_2k_pages(self) -> bool:
        """Whether the transfer must end on a 2 KiB boundary. The fork's 2 KiB-page
        builds say so with 0x03, but upstream's 2 KiB-page builds acknowledge with 0x02
        too, so on an F1 only a part known to have 1 KiB pages is spared the extra KiB.
        The F4 writes each KiB as it comes."""
        if self.build is not F1:
            return False
        return self._ack == ACK_NEXT_2K or self.page_size != CHUNK

    def _begin(self) -> None:
        if self._resync:
            self._realign()
        self._drain()
        self._output(command(RESET_PAGES), "sending RESET_PAGES")
        self._ack = 0
        if self.build is F1:
            # The F1 acknowledges RESET_PAGES like a written page; reading it keeps the
            # acknowledgements in step with the chunks.
            self._ack = self._await_ack("RESET_PAGES")
        self._next = self.build.app_start

    def _send_chunk(self, address: int, chunk: bytes) -> None:
        where = f"the KiB at {hexaddr(address)}"
        for index in range(0, CHUNK, REPORT_SIZE):
            number = index // REPORT_SIZE + 1
            self._output(
                chunk[index : index + REPORT_SIZE],
                f"sending report {number} of {CHUNK // REPORT_SIZE} of {where}",
            )
        self._ack = self._await_ack(where)
        self._next = address + CHUNK

    def _await_ack(self, what: str) -> int:
        try:
            reply = self.link.interrupt_read(
                IN_ENDPOINT,
                ACK_SIZE,
                int(ACK_TIMEOUT * 1000),
                what=f"waiting for the acknowledgement of {what}",
            )
        except NoAnswerError:
            raise NoAnswerError(
                f"the HID bootloader did not acknowledge {what} within {ACK_TIMEOUT:g} s",
                "press the board's reset to restart the bootloader, then program again "
                f"(it starts over from {hexaddr(self.build.app_start)})",
            ) from None
        if reply[:7] != SIGNATURE or len(reply) < 8 or reply[7] not in (ACK_NEXT, ACK_NEXT_2K):
            raise ProtocolError(
                f"the HID bootloader answered {reply.hex(' ')} to {what}, not an acknowledgement"
            )
        return reply[7]

    def _drain(self) -> None:
        """Read away acknowledgements left over from an earlier, broken-off transfer."""
        for _ in range(4):
            try:
                self.link.interrupt_read(IN_ENDPOINT, ACK_SIZE, DRAIN_TIMEOUT_MS)
            except NoAnswerError:
                return

    def _output(self, report: bytes, what: str) -> None:
        if self.out_endpoint is not None:
            self.link.interrupt_write(self.out_endpoint, report, what=what)
        else:
            self.link.control_out(
                HID_OUT_REQUEST, SET_REPORT, OUTPUT_REPORT_0, self.interface, report, what=what
            )

    def _abandon(self) -> None:
        self._next = None
        self._resync = True

    def _realign(self) -> None:
        """A USB reset puts the F1's page counter back at the application start
        (USB_Reset), so that the next command report is read as a command. The F4 keeps
        its counters across a USB reset, but the upstream F4 build reads a command in any
        report, and the fork's at every KiB, which flashsh's transfers end on."""
        if self.build is F1:
            self.link.reset()
        self._resync = False

    # ------------------------------------------------------------ leaving

    def start_application(self) -> None:
        """REBOOT_MCU. The board resets and leaves the bus, which may fail the request
        itself: that is the reboot, not an error."""
        if self._next is not None:
            self._resync = True  # stopped between chunks: the F1 may be mid-page
        if self._resync:
            self._realign()
        self._next = None
        with contextlib.suppress(DeviceGone, ProtocolError):
            self._output(command(REBOOT_MCU), "sending REBOOT_MCU")


def _bcd(value: int) -> str:
    """bcdDevice 0x0300 -> ``3.00``."""
    return f"{value >> 8:x}.{value & 0xFF:02x}"
