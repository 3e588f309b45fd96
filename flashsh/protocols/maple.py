"""The STM32duino (Maple) DFU bootloader, 1eaf:0003 (facts: docs/protocols/maple.md).

It looks like USB DFU 1.1 but is not (dfu.md §7.2, read from STM32duino-bootloader
dfu.c): block numbers are ignored and blocks are written back to back from the alt
setting's base in the order they arrive; each block erases the page it starts in; the
write happens inside the GETSTATUS that follows the DNLOAD; and a GETSTATUS or GETSTATE
while a download is open ends it, so the next block starts over at the base. flashsh
therefore sends exactly one page per DNLOAD, exactly one GETSTATUS per block, every page
from the base in order (gaps filled with 0xFF), and refuses what cannot work that way:
an image that does not start at an alt setting's base, ``diff``, patching bytes.

A finished download is not manifested at once: manifestation leaves the bootloader
waiting for a USB reset with uploads dead, which would make ``program ... verify``
impossible. The download is closed with ABORT before anything is read; ``reset``
manifests an unread download (what dfu-util does) and otherwise enters dfuUPLOAD-IDLE,
and then resets the bus, which reboots the chip from any state but dfuIDLE.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flashsh.errors import FlashshError, ImageError, ProtocolError, TargetError, UnsupportedError
from flashsh.images.vectors import check_vector_table
from flashsh.numbers import hexaddr, human_size
from flashsh.protocols.base import Bootloader, Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.dfu_wire import (
    DfuRequests,
    State,
    dfu_interfaces,
    functional_descriptor,
    state_name,
)
from flashsh.protocols.usb_base import FOLLOW_TIMEOUT, UsbBootloader
from flashsh.transports.usb import DeviceGone, list_devices

if TYPE_CHECKING:
    from flashsh.images import Image

FLASH_BASE = 0x08000000
#: The "generic_boot20" application start (alt 2), which alt 1 downloads erase first.
APP_2000 = 0x08002000
#: Cortex-M SRAM region: where the original Maple's alt 0 loaded code (0x20000C00).
SRAM = range(0x20000000, 0x40000000)
#: The bootloader starts an image whose first word passes this test (hardware.c
#: checkUserCode): a stack pointer in SRAM.
SP_MASK, SP_OK = 0x2FFE0000, 0x20000000
#: Flash sizes flashsh assumes from the page size when --chip does not say: the smaller
#: of the usual pair, so that writing and erasing never run past a smaller part's end.
ASSUMED_FLASH = {1024: (64, 128), 2048: (256, 512)}
#: How long the chip may take to leave the bus after the reset that reboots it.
REBOOT_WAIT = 1.0

_FLASH_AT = re.compile(r"flash\D*?0x([0-9a-f]{1,8})", re.IGNORECASE)


@dataclass(frozen=True)
class MapleAlt:
    """One alternate setting, from its interface string (config.h ALTn_MSG_STR)."""

    alt: int
    text: str
    #: The flash address downloads on this alt start at; None for RAM or unknown.
    base: int | None

    @classmethod
    def parse(cls, alt: int, text: str | None) -> MapleAlt:
        text = text or ""
        found = _FLASH_AT.search(text)
        return cls(alt, text, int(found.group(1), 16) if found else None)

    @property
    def reason(self) -> str:
        """What the bootloader says about this alt, after its version prefix."""
        return self.text.split("  ", 1)[-1].strip() or f"alt {self.alt}"


def common_version(alts: list[MapleAlt]) -> str:
    """The version text all alt strings begin with ("STM32duino bootloader v1.0")."""
    prefix = os.path.commonprefix([a.text for a in alts if a.text])
    if not prefix:
        return "Maple DFU bootloader"
    return prefix.strip() if prefix.endswith(" ") else prefix.rsplit(" ", 1)[0].strip()


class Maple(UsbBootloader):
    name = "maple"
    kinds = ("maple",)
    capabilities = Capability.READ | Capability.WRITE | Capability.PAGE_ERASE_ON_WRITE
    after_start = "the board rebooted: after a download the bootloader starts it at once"

    def start(self) -> None:
        found = dfu_interfaces(self.link)
        if not found:
            raise ProtocolError(f"{self.link.info.usb_id} has no DFU interface")
        self.interface = found[0][0]
        self.alts = [MapleAlt.parse(alt, text) for number, alt, text in found
                     if number == self.interface]  # fmt: skip
        self.flash_alts = sorted((a for a in self.alts if a.base), key=lambda a: a.base or 0)
        if not self.flash_alts:
            raise ProtocolError(f"{self.link.info.usb_id}: no alt setting names a flash address")
        self.page_size = functional_descriptor(self.link).transfer_size
        if self.page_size not in ASSUMED_FLASH:
            raise ProtocolError(
                f"{self.link.info.usb_id} reports {self.page_size}-byte transfers; the "
                "stm32duino bootloader uses its 1 or 2 KiB flash page size",
                "flashsh knows only its builds with 1 or 2 KiB pages",
            )
        self.dfu = DfuRequests(self.link, self.interface)
        self.flash_size, self.size_source = self._flash_size()
        self.notes: list[str] = []
        self._image_end: int | None = None  # end of the image check_request last saw
        self._mode = "idle"  # the device's state as flashsh left it: idle/download/upload
        self._done = False  # the open download holds a whole transfer
        self._next = 0  # where the next block of the open download lands
        self._block = 0
        self._alt: int | None = None
        self._select(self.flash_alts[0].alt)
        self._to_idle()

    # ------------------------------------------------------------------ identity

    def _flash_size(self) -> tuple[int, str]:
        small, large = ASSUMED_FLASH[self.page_size]
        if not self.chip_hint:
            return small * 1024, (
                f"assumed: {self.page_size // 1024} KiB blocks mean {small} or {large} KiB"
            )
        from flashsh.chips.stm32 import stm32_part

        chip = stm32_part(self.chip_hint)
        page_size = 2048 if chip.flash_size > 128 * 1024 else 1024
        if chip.family != "f1" or page_size != self.page_size:
            raise TargetError(
                f"--chip {self.chip_hint} does not match this bootloader: it reports "
                f"{self.page_size}-byte pages, so the chip is an STM32F1 with "
                f"{'more than' if self.page_size == 2048 else 'at most'} 128 KiB",
                "name the board's STM32F103 part (stm32f103c8, stm32f103cb, stm32f103rc, "
                "stm32f103re), or leave out --chip",
            )
        return chip.flash_size, f"--chip {chip.name}"

    @property
    def version(self) -> str:
        return common_version(self.alts)

    def identify(self) -> TargetInfo:
        info = self.link.info
        bcd = getattr(self.link.device, "bcdDevice", 0)
        chip = self.chip_hint.upper() if self.chip_hint else "STM32F103"
        alts = ", ".join(
            f"{a.alt}: {hexaddr(a.base)}" if a.base else f"{a.alt}: refused ({a.reason})"
            for a in sorted(self.alts, key=lambda a: -a.alt)
        )
        return TargetInfo(
            protocol="maple",
            bootloader=f"{self.version} (stm32duino DFU, bcdDevice 0x{bcd:04x})",
            chip=chip,
            link=self.link.description,
            how=f"USB id {info.usb_id} at {info.port}; {self.page_size}-byte blocks",
            details={
                "alt_settings": alts,
                "page_size": self.page_size,
                "flash_size": f"{human_size(self.flash_size)} ({self.size_source})",
                "bcd_device": f"0x{bcd:04x}"
                + (" (original LeafLabs Maple)" if bcd == 0x0200 else ""),
            },
        )

    def memory_map(self) -> MemoryMap:
        lowest = self.flash_alts[0].base or FLASH_BASE
        small, large = ASSUMED_FLASH[self.page_size]
        hint = None
        if not self.chip_hint:
            hint = (
                f"flashsh assumes {small} KiB ({self.page_size // 1024} KiB pages mean "
                f"{small} or {large} KiB): name the part, e.g. --chip "
                + ("stm32f103cb" if self.page_size == 1024 else "stm32f103re")
            )
        flash = Region("flash", FLASH_BASE, self.flash_size, self.page_size, self.page_size)
        return MemoryMap((flash,), bootloader=(FLASH_BASE, lowest), app_start=lowest,
                         size_hint=hint)  # fmt: skip

    # ------------------------------------------------------------------ checks

    def _alt_for(self, address: int) -> MapleAlt | None:
        return next((a for a in self.flash_alts if a.base == address), None)

    def _bases_text(self) -> str:
        return " or ".join(f"{hexaddr(a.base or 0)} (alt {a.alt})"
                           for a in self.flash_alts)  # fmt: skip

    def check_request(self, image: Image, *, diff: bool) -> None:
        """Refuse what the bootloader cannot do: a ``diff`` (blocks land in arrival
        order, so skipping one shifts the rest), RAM (alt 0), a start that is not an alt
        base."""
        self.notes, self._image_end = [], None
        if diff:
            raise UnsupportedError(
                "the stm32duino bootloader writes blocks one after another from the start, "
                "so `diff` cannot skip the pages that match",
                "program without diff",
            )
        name = image.source or "the image"
        start = image.start
        if start in SRAM:
            ram = next((a for a in self.alts if a.base is None and "RAM" in a.text.upper()),
                       None)  # fmt: skip
            if ram is None:
                reason = "it has no RAM target"
            elif "not supported" in ram.text:
                reason = f'alt {ram.alt} says "{ram.reason}"'
            else:  # the original LeafLabs alt 0 loads RAM; flashsh writes flash only
                reason = f"flashsh does not load RAM through alt {ram.alt}"
            raise ImageError(
                f"{name} is for RAM at {hexaddr(start)}: the bootloader writes flash only "
                f"({reason})",
                f"build the firmware for flash at {self._bases_text()}",
            )
        lowest = self.flash_alts[0].base or 0
        if start < lowest or start >= FLASH_BASE + self.flash_size:
            return  # over the bootloader or past the end: check_fits says why
        if self._alt_for(start) is None:
            raise ImageError(
                f"{name} starts at {hexaddr(start)}, but the stm32duino bootloader writes "
                f"only from {self._bases_text()}",
                f"give {hexaddr(lowest)} as the address"
                if image.format == "bin"
                else f"build the firmware for {hexaddr(lowest)} (Klipper: the 8KiB bootloader)",
            )
        self._image_end = image.end  # looked behind when the download starts

    def check_image(self, image: Image) -> None:
        """The bootloader starts an image only if its first word is an SRAM stack
        pointer; a Klipper build must be for the STM32F1."""
        from flashsh.images.klipper_dict import klipper_build

        name = image.source or "the image"
        build = klipper_build(image)
        if build is not None and not build.mcu.lower().startswith("stm32f1"):
            raise ImageError(
                f"{name} is Klipper {build.version} built for {build.mcu}, but the "
                "stm32duino bootloader runs on an STM32F103",
                "build Klipper for STM32F103 with the 8KiB bootloader offset",
            )
        first = image.segments[0] if image.segments else None
        if first is None or self._alt_for(first.address) is None:
            return
        # The bootloader starts an image only if its stack pointer passes this mask
        # (hardware.c checkUserCode); the reset handler must lie in the image as placed.
        check_vector_table(
            image,
            first.address,
            sp_ok=lambda sp: sp & SP_MASK == SP_OK,
            hint=f"build it for {hexaddr(first.address)} (Klipper: the 8KiB bootloader "
            "offset), or add `force` to write it anyway",
        )

    def _note_older_data(self, end: int) -> None:
        """Each block erases only its own page: say when the page after the image
        still holds something (a longer, older image)."""
        after = end + (-(end - FLASH_BASE) % self.page_size)
        if after >= FLASH_BASE + self.flash_size:
            return
        try:
            data = self._upload(after)
        except FlashshError:
            return
        if data.strip(b"\xff"):
            self.notes.append(
                f"flash from {hexaddr(after)} still holds older data: the bootloader erases "
                "only the pages it writes (mass_erase first clears it)"
            )

    def write_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    # ------------------------------------------------------------------ state

    def _select(self, alt: int) -> None:
        if self._alt != alt:
            self.link.claim(self.interface, alt)
            self._alt = alt

    def _to_idle(self) -> None:
        """Bring the device to dfuIDLE from whatever a previous host left. GETSTATE
        first: it changes nothing except ending an open download (which a GETSTATUS
        would also do, and in dfuDNLOAD-SYNC a GETSTATUS would write a stale block)."""
        state = self.dfu.get_state()
        if state in (State.UPLOAD_IDLE, State.MANIFEST_SYNC, State.DNLOAD_SYNC):
            # ABORT leaves dfuUPLOAD-IDLE; in the other two it stalls into dfuERROR,
            # dropping the stale block instead of writing it.
            with contextlib.suppress(ProtocolError):
                self.dfu.abort()
            state = self.dfu.get_state()
        if state == State.ERROR:
            self.dfu.clear_status()  # only ever in dfuERROR: in dfuIDLE it stalls
            state = self.dfu.get_state()
        if state == State.MANIFEST_WAIT_RESET:
            raise ProtocolError(
                "the bootloader finished a download and waits for a USB reset",
                "replug the board or press reset: it then runs the new firmware",
            )
        if state != State.IDLE:
            raise ProtocolError(f"the bootloader is in {state_name(state)}, not dfuIDLE",
                                "replug the board and connect again")  # fmt: skip
        self._mode = "idle"

    def _close_download(self) -> None:
        """End an open download or upload (ABORT, to dfuIDLE; nothing is written), or
        find out where a failed request left the device."""
        if self._mode == "unknown":
            self._to_idle()
        elif self._mode in ("download", "upload"):
            self.dfu.abort()
        self._mode, self._done = "idle", False

    # ------------------------------------------------------------------ reading

    def read(self, region: Region, address: int, length: int) -> bytes:
        out = bytearray()
        first = address - (address - FLASH_BASE) % self.page_size
        for page in range(first, address + length, self.page_size):
            out += self._upload(page)
        skip = address - first
        return bytes(out[skip : skip + length])

    def _upload(self, page: int) -> bytes:
        """One page through the lowest flash alt. An upload session always opens with
        block 0: the first UPLOAD from dfuIDLE is not checked against the end of
        flash, the later ones are (dfu.c, dfuUPLOAD-IDLE)."""
        alt = self.flash_alts[0]
        base = alt.base or 0
        if page < base:
            raise UnsupportedError(
                f"{hexaddr(page)} is inside the bootloader, which the stm32duino bootloader "
                f"cannot read: uploads start at {hexaddr(base)}",
                f"read from {hexaddr(base)}: `read_bank flash FILE {hexaddr(base - FLASH_BASE)}`",
            )
        if self._mode in ("download", "unknown") or self._alt != alt.alt:
            self._close_download()
        self._select(alt.alt)
        index = (page - base) // self.page_size
        if self._mode == "idle":
            opener = self.dfu.upload(0, self.page_size)
            self._mode = "upload" if len(opener) == self.page_size else "idle"
            if index == 0:
                return self._full(opener, page)
        data = self.dfu.upload(index, self.page_size)
        if len(data) < self.page_size:
            self._mode = "idle"  # a short block ends the upload (dfuIDLE)
        return self._full(data, page)

    def _full(self, data: bytes, page: int) -> bytes:
        if len(data) == self.page_size:
            return data
        raise TargetError(
            f"the bootloader returned {len(data)} of {self.page_size} bytes at "
            f"{hexaddr(page)}: its uploads end there (the chip's flash-size register)",
            "the flash is smaller than flashsh assumed: name the part with --chip",
        )

    # ------------------------------------------------------------------ writing

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        if len(data) > self.page_size:
            raise TargetError(f"a block of {len(data)} bytes is more than one page")
        data = data.ljust(self.page_size, b"\xff")
        if self._mode != "download" or self._done:
            self._open_download(address)
        if address < self._next:
            raise TargetError(
                f"{hexaddr(address)} comes after {hexaddr(self._next - 1)} in this download: "
                "the bootloader writes blocks only in address order"
            )
        blank = b"\xff" * self.page_size
        while self._next < address:  # a gap in the image: the blocks must not shift
            self._send(blank, f"filling {hexaddr(self._next)} with 0xFF before it")
        self._send(data, "")

    def _open_download(self, address: int) -> None:
        alt = self._alt_for(address)
        if alt is None:
            raise TargetError(
                f"{hexaddr(address)} is not where a download can start: the stm32duino "
                f"bootloader writes whole images only, from {self._bases_text()}",
                f"program the whole image from {hexaddr(self.flash_alts[0].base or 0)}",
            )
        if self._image_end is not None:
            self._note_older_data(self._image_end)
            self._image_end = None
        self._close_download()
        self._select(alt.alt)
        if alt.alt == 1:  # dfu.c: an alt 1 download begins by erasing that page
            self.notes.append(
                f"alt 1 first erased the page at {hexaddr(APP_2000)}, so that the "
                f"bootloader starts the image at {hexaddr(address)}"
            )
        self._mode, self._next, self._block = "download", address, 0

    def _send(self, block: bytes, what: str) -> None:
        """One DNLOAD of exactly one page and the one GETSTATUS that writes it."""
        at = self._next
        try:
            self.dfu.dnload(self._block, block)
            reply = self.dfu.get_status()
        except FlashshError as exc:
            self._mode = "unknown"
            prefix = f"{what}: " if what else ""
            raise type(exc)(f"{prefix}{exc.message}", exc.hint) from exc
        if reply.state != State.DNLOAD_IDLE:
            self._mode = "unknown"
            raise ProtocolError(
                f"the bootloader went to {state_name(reply.state)} writing {hexaddr(at)} "
                "(it gives no reason: its status is always OK)",
                "replug the board and program again",
            )
        if reply.poll_ms:
            time.sleep(reply.poll_ms / 1000)
        self._next += self.page_size
        self._block = (self._block + 1) & 0xFFFF

    def finish_writes(self) -> None:
        """The transfer is complete. Manifestation waits for ``reset`` (module doc)."""
        if self._mode == "download":
            self._done = True

    # ------------------------------------------------------------------ leaving

    def start_application(self) -> None:
        """Reboot the chip by a USB reset, from a state where the bootloader takes it
        as one: dfuMANIFEST-WAIT-RESET after a download nothing has read yet, else
        dfuUPLOAD-IDLE (a USB reset in dfuIDLE is ignored)."""
        if self._mode == "download" and self._done:
            self.dfu.dnload(self._block, b"")
            reply = self.dfu.get_status()
            if reply.state != State.MANIFEST_WAIT_RESET:
                raise ProtocolError(
                    f"the bootloader went to {state_name(reply.state)} instead of "
                    "dfuMANIFEST-WAIT-RESET after the download",
                    "replug the board: the image is written",
                )
        elif self._mode != "upload":
            self._close_download()
            self._upload(self.flash_alts[0].base or 0)
        self._mode = "idle"
        self.link.reset()
        deadline = time.monotonic() + REBOOT_WAIT
        while not self.link.gone():
            if time.monotonic() > deadline:
                raise ProtocolError(
                    "the bootloader stayed on the bus after the USB reset",
                    "press reset or replug the board",
                )
            time.sleep(0.01)

    def follow_after_start(self) -> Bootloader | None:
        """Wait for the application. The bootloader may show up first for its wait
        (about a second after a reset that followed no download): talking to it then
        would keep it there, so it is only taken when it is still there at the end."""
        from flashsh.protocols import usb_session_for

        try:
            info = self.link.follow(lambda found: found.kind != "maple", FOLLOW_TIMEOUT,
                                    "application")  # fmt: skip
        except DeviceGone:
            old = self.link.info
            back = [i for i in list_devices(self.link.backend)
                    if i.kind == "maple" and i.port == old.port]  # fmt: skip
            if not back:
                return None
            info = back[0]
        self.link.reopen(info)
        return usb_session_for(self.link, chip=self.chip_hint)

    def keep_alive(self) -> None:
        """No request: a GETSTATE would end an open download. Only check the bus."""
        if self.link.gone():
            raise DeviceGone(f"{self.link.info.usb_id} left the USB bus")

    def close(self) -> None:
        """Leave the bootloader idle, not mid-download, so the next host starts clean."""
        try:
            if self._mode in ("download", "upload"):
                self.dfu.abort()
        except FlashshError:
            pass
        super().close()
