"""``usb``: the USB bootloaders (and known applications) on the bus."""

from __future__ import annotations

import argparse

import cmd2

from flashsh.errors import FlashshError
from flashsh.shell import FlashShell


def usb_listing(app: FlashShell) -> list[dict[str, object]]:
    """Every USB bootloader flashsh knows, as dicts; raises when USB cannot be used."""
    from flashsh.transports.usb import list_devices, load_backend

    backend = load_backend(app.options.probe.usb_backend)
    return [info.as_dict() for info in list_devices(backend)]


def usb_table(found: list[dict[str, object]]) -> str:
    rows = [("TARGET", "PORT", "WHAT", "PRODUCT")]
    rows += [
        (str(d["target"]), str(d["port"]), str(d["what"]), str(d["product"] or "-")) for d in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows
    )


class UsbCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "Connection"

    usb_parser = cmd2.Cmd2ArgumentParser(
        description="List USB bootloaders: DFU, DfuSe, Maple, HID, HalfKay, and boards "
        "running Klipper.",
        epilog="Connect with the TARGET column: `connect usb:0483:df11`. --usb-backend (or "
        "FLASHSH_USB_BACKEND) chooses another pyusb backend; see docs/usb.md.",
    )

    @cmd2.with_argparser(usb_parser)
    def do_usb(self, args: argparse.Namespace) -> None:
        """List USB bootloaders with their VID:PID, port, serial number and kind."""
        found = usb_listing(self._cmd)
        if not found:
            self._cmd.report(
                [],
                "no USB bootloader found (put the board in its bootloader: BOOT0 high and "
                "reset, a double reset, or `bootloader` from its serial port)",
            )
            return
        self._cmd.report(found, usb_table(found))


def drive_listing() -> list[dict[str, object]]:
    """Mounted bootloader drives (UF2, STM32 MSC), as dicts for `ports`."""
    from flashsh.transports import msc

    return [
        {
            "drive": found.path,
            "label": found.label,
            "kind": found.kind,
            "board_id": found.info.board_id if found.info else None,
            "target": found.path,
        }
        for found in msc.find_drives(msc.read_mounts)
    ]


def drive_table(found: list[dict[str, object]]) -> str:
    rows = [("DRIVE", "LABEL", "WHAT")]
    rows += [
        (
            str(d["drive"]),
            str(d["label"] or "-"),
            f"UF2, Board-ID {d['board_id']}" if d["kind"] == "uf2" else "STM32 MSC bootloader",
        )
        for d in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)


def quiet_usb_listing(app: FlashShell) -> list[dict[str, object]]:
    """The listing, or nothing when USB cannot be used here (for `ports`)."""
    try:
        return usb_listing(app)
    except FlashshError:
        return []
