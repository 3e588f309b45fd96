"""Finding, opening and describing targets: ports, connect, disconnect, info, reset."""

from __future__ import annotations

import argparse
from dataclasses import replace

import cmd2
from cmd2 import Choices

from flashsh.commands.can import add_can_arguments, can_options
from flashsh.errors import FlashshError
from flashsh.numbers import hexaddr, human_size
from flashsh.protocols import SERIAL_PROTOCOLS
from flashsh.session import Session
from flashsh.shell import FlashShell
from flashsh.transports.can import is_uuid

SIM_EXAMPLES = (
    "sim://stk500v1?chip=atmega328p",
    "sim://stk500v1?chip=atmega1284p&baud=57600",
    "sim://stk500v1?chip=atmega1280&bootloader=atmegaboot&baud=57600",
    "sim://stk500v2?chip=atmega2560",
    "sim://stk500v2?mode=isp&chip=atmega328p",
    "sim://stm32?chip=stm32f103c8",
    "sim://dfuse?chip=stm32f407",
    "sim://maple",
    "sim://hid?build=f1",
    "sim://halfkay?model=teensypp2",
)


def list_ports() -> list[dict[str, str]]:
    from serial.tools import list_ports

    found = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        vidpid = f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else ""
        found.append({"port": port.device, "vid_pid": vidpid, "description": port.description})
    return found


def target_choices(app: FlashShell) -> Choices:
    from flashsh.commands.usb import quiet_usb_listing

    usb = [str(d["target"]) for d in quiet_usb_listing(app)]
    return Choices.from_values(
        app.can_uuids + [p["port"] for p in list_ports()] + usb + list(SIM_EXAMPLES)
    )


class ConnectionCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "Connection"

    @cmd2.with_argparser(
        cmd2.Cmd2ArgumentParser(description="List serial ports and USB bootloaders.")
    )
    def do_ports(self, args: argparse.Namespace) -> None:
        """List serial ports with their USB VID:PID and description, then the USB
        bootloaders that have no serial port (the `usb` command's list) and the mounted
        bootloader drives."""
        from flashsh.commands.usb import drive_listing, drive_table, quiet_usb_listing, usb_table

        ports = list_ports()
        usb = quiet_usb_listing(self._cmd)
        drives = drive_listing()
        if not ports and not usb and not drives:
            self._cmd.report(
                [],
                "no serial ports, USB bootloaders or bootloader drives found (is the board "
                "plugged in? try `dmesg | tail`)",
            )
            return
        lines = []
        if ports:
            width = max(len(p["port"]) for p in ports)
            lines = [
                f"{p['port']:<{width}}  {p['vid_pid'] or '-':<9}  {p['description']}" for p in ports
            ]
        tables = ([usb_table(usb)] if usb else []) + ([drive_table(drives)] if drives else [])
        for table in tables:
            lines += ["", table] if lines else [table]
        result: list[dict[str, object]] = [dict(p) for p in ports]
        result += [{"usb": d} for d in usb] + [{"drive": d} for d in drives]
        self._cmd.report(result, "\n".join(lines))

    connect_parser = cmd2.Cmd2ArgumentParser(
        description="Open a port and find the bootloader on it.",
        epilog="TARGET: /dev/ttyACM0, COM3, a pyserial URL (socket://host:port, "
        "rfc2217://host:port, spy:///dev/ttyUSB0) or a simulator (sim://stk500v1?chip=atmega328p).",
    )
    connect_parser.add_argument(
        "target", choices_provider=target_choices, help="port, URL, or a CAN node's UUID"
    )
    connect_parser.add_argument(
        "uuid",
        nargs="?",
        choices_provider=lambda app: Choices.from_values(app.can_uuids),
        help="with a CAN channel as TARGET (connect can0 UUID): the node's UUID",
    )
    connect_parser.add_argument("--baud", type=int, help="only this baud rate")
    connect_parser.add_argument(
        "--protocol", choices=["auto", *SERIAL_PROTOCOLS], help="skip auto-detection"
    )
    connect_parser.add_argument("--chip", help="trust this chip instead of the signature")
    connect_parser.add_argument("--no-reset", action="store_true", help="do not pulse DTR/RTS")
    connect_parser.add_argument(
        "--entry", metavar="SEQ", help="STM32: BOOT0/RESET wiring, e.g. boot0=rts,reset=dtr"
    )
    add_can_arguments(connect_parser)

    @cmd2.with_argparser(connect_parser)
    def do_connect(self, args: argparse.Namespace) -> None:
        """Connect to TARGET, detecting protocol, baud rate and chip."""
        options = self._cmd.options.probe
        probe = replace(
            options,
            baudrate=args.baud or options.baudrate,
            protocol=args.protocol or options.protocol,
            chip=args.chip or options.chip,
            reset=options.reset and not args.no_reset,
            entry=args.entry or options.entry,
            can=can_options(self._cmd, args),
        )
        target = args.target
        if args.uuid is not None:
            if not is_uuid(args.uuid):
                raise FlashshError(
                    f"{args.uuid!r} is not a node UUID",
                    "a UUID is 12 hex digits; `query` lists them",
                )
            probe.can = replace(probe.can, channel=args.target)
            target = args.uuid.lower()
        self._cmd.detach()
        session = self._cmd.take_early_session(target, probe)
        if session is None:
            report = self._cmd.pfeedback if self._cmd.options.verbose else None
            session = Session.open(target, probe, report)
        self._cmd.attach(session)
        info = session.info
        if info.protocol == "klipper":
            self._cmd.report(
                info_dict(session),
                f"connected: Klipper firmware is running on {info.link}"
                + (f" ({info.chip})" if info.chip != "unknown" else "")
                + ", not a bootloader; use `bootloader` to reboot it into Katapult",
            )
            return
        if info.baudrate is None:
            self._cmd.report(
                info_dict(session), f"connected: {info.chip}, {info.bootloader} on {info.link}"
            )
            return
        self._cmd.report(
            info_dict(session),
            f"connected: {info.chip}, {info.bootloader}, {info.baudrate} baud on {info.link}",
        )

    @cmd2.with_argparser(cmd2.Cmd2ArgumentParser(description="Close the session."))
    def do_disconnect(self, args: argparse.Namespace) -> None:
        """Close the port; the board stays in the bootloader until its timeout."""
        was = self._cmd.session.target if self._cmd.session else None
        self._cmd.detach()
        self._cmd.report({"disconnected": was}, f"disconnected from {was}" if was else "")

    @cmd2.with_argparser(cmd2.Cmd2ArgumentParser(description="Show what is connected."))
    def do_info(self, args: argparse.Namespace) -> None:
        """Show protocol, bootloader, chip, memories and how they were found."""
        session = self._cmd.require_session()
        state = ""
        try:
            with session.use():
                pass  # reconnects first if the board left the bootloader
        except FlashshError as exc:
            state = str(exc)  # an application answers: say so below
        data = info_dict(session)
        data["state"] = state or "bootloader"
        rows = [
            ("target", session.target),
            ("protocol", data["protocol"]),
            ("bootloader", data["bootloader"]),
            ("chip", data["chip"]),
            ("baud", str(data["baudrate"])),
            ("found by", data["how"]),
        ]
        if data["baudrate"] is None:
            rows.remove(("baud", "None"))
        if state:
            rows.append(("state", state))
        for region in session.known_memory_map.regions:
            rows.append(
                (
                    f"bank {region.bank}",
                    f"{region.name} {hexaddr(region.start)}-{hexaddr(region.end - 1)} "
                    f"({human_size(region.size)}, page {region.page_size}, {region.access})",
                )
            )
        if session.known_memory_map.bootloader:
            lo, hi = session.known_memory_map.bootloader
            rows.append(("bootloader at", f"{hexaddr(lo)}-{hexaddr(hi - 1)} (never written)"))
        rows += [(k.replace("_", " "), str(v)) for k, v in session.info.details.items()]
        width = max(len(k) for k, _ in rows)
        self._cmd.report(data, "\n".join(f"{k:<{width}}  {v}" for k, v in rows))

    reset_parser = cmd2.Cmd2ArgumentParser(
        description="Leave the bootloader and start the application."
    )

    @cmd2.with_argparser(reset_parser)
    def do_reset(self, args: argparse.Namespace) -> None:
        """Start the application; the next command re-enters the bootloader by itself."""
        session = self._cmd.require_session()
        before = session.bootloader
        session.start_application()
        self._cmd.update_prompt()
        if session.bootloader is before:
            self._cmd.report(
                {"application_started": True},
                f"application started ({session.bootloader.after_start})",
            )
            return
        # A USB board re-enumerated: the session followed it to what came back.
        info = session.info
        self._cmd.report(
            {"application_started": True, "now": info_dict(session)},
            f"application started; the board came back as {info.chip}: {info.bootloader} "
            f"({info.how})",
        )


def info_dict(session: Session) -> dict[str, object]:
    info = session.info
    memory = session.known_memory_map
    return {
        "target": session.target,
        "protocol": info.protocol,
        "bootloader": info.bootloader,
        "chip": info.chip,
        "baudrate": info.baudrate,
        "how": info.how,
        "regions": [
            {
                "bank": r.bank,
                "name": r.name,
                "start": r.start,
                "size": r.size,
                "page_size": r.page_size,
                "access": r.access,
            }
            for r in memory.regions
        ],
        "bootloader_range": list(memory.bootloader) if memory.bootloader else None,
        "details": info.details,
    }
