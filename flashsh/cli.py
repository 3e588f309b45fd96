"""Command line: ``flashsh [TARGET]``, ``-c "cmd; cmd"``, ``-s script.fsh``.

Kept thin and light: ``--help`` and ``--version`` answer without importing cmd2.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from flashsh import __version__

EPILOG = """\
TARGET is a serial port (/dev/ttyACM0, COM3), a pyserial URL (socket://host:port,
rfc2217://host:port, spy:///dev/ttyUSB0), a USB bootloader (usb, usb:0483:df11,
usb:VID:PID:SERIAL, usb:1-1.3), a bootloader drive (msc, msc:LABEL, a mount point), a
built-in simulator such as sim://stk500v1?chip=atmega328p or sim://dfuse, or the
12-hex-digit UUID of a Katapult or Klipper node on the CAN bus --can-channel names.
Without TARGET the shell starts unconnected.

examples:
  flashsh /dev/ttyUSB0                      open a shell on the board
  flashsh -c "program blink.hex verify" /dev/ttyACM0
  flashsh -s scripts/flash_uno_optiboot.fsh sim://stk500v1?chip=atmega328p
  flashsh -c "program klipper.bin verify reset" usb:0483:df11
  flashsh --can-channel can0 -c query
  flashsh --can-channel can0 -c "program klipper.bin verify reset" aabbccddeeff
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashsh",
        description="One interactive shell for microcontroller bootloaders.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", nargs="?", help="port, URL or sim:// target to connect to")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("-s", "--script", metavar="FILE.fsh", help="run a script, then exit")
    batch.add_argument("-c", "--command", metavar="CMDS", help='run "cmd; cmd", then exit')
    parser.add_argument(
        "--protocol",
        default="auto",
        help="stk500v1, stk500v2, stm32, katapult, klipper, samba or auto (default: detect)",
    )
    parser.add_argument(
        "--entry",
        metavar="SEQ",
        help="STM32: drive BOOT0/RESET from RTS/DTR, e.g. boot0=rts,reset=dtr (see docs/stm32.md)",
    )
    parser.add_argument(
        "-D",
        "--define",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set ${NAME} for scripts and -c (repeatable)",
    )
    parser.add_argument("--baud", type=int, help="only try this baud rate")
    can = parser.add_argument_group(
        "CAN bus", "for a TARGET that is a node UUID, and for `query` (python-can names)"
    )
    can.add_argument("--can-interface", metavar="NAME", help="socketcan (default), slcan, ...")
    can.add_argument("--can-channel", metavar="CHANNEL", help="can0 (default), /dev/ttyACM0, ...")
    can.add_argument("--bitrate", type=int, help="CAN bitrate (default 1000000)")
    parser.add_argument(
        "--usb-backend",
        metavar="MODULE:CALLABLE",
        help="pyusb backend to use instead of libusb (also FLASHSH_USB_BACKEND); "
        "flashsh.sims.usb_bus:backend serves the devices FLASHSH_SIM_USB lists",
    )
    parser.add_argument("--chip", help="trust this chip instead of the signature")
    parser.add_argument(
        "--no-reset", action="store_true", help="do not pulse DTR/RTS to reset the board"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="say what is tried")
    parser.add_argument("--json", action="store_true", help="one JSON object per command")
    parser.add_argument("--yes", action="store_true", help="answer yes to confirmations")
    parser.add_argument(
        "--allow-shell",
        action="store_true",
        help="enable shell, Python and editor commands and output redirection (off by default, "
        "so that scripts from others cannot run programs)",
    )
    parser.add_argument("--version", action="version", version=f"flashsh {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from flashsh.protocols import ProbeOptions
    from flashsh.session import EarlyOpen
    from flashsh.transports.can import CanOptions

    probe = ProbeOptions(
        protocol=args.protocol,
        baudrate=args.baud,
        reset=not args.no_reset,
        chip=args.chip,
        entry=args.entry,
        can=CanOptions(args.can_interface, args.can_channel, args.bitrate),
        usb_backend=args.usb_backend,
    )
    # Start resetting the board and finding its bootloader while the shell loads.
    early = EarlyOpen(args.target, probe, args.verbose) if args.target else None

    from flashsh.errors import FlashshError
    from flashsh.shell import FlashShell, ShellOptions, command_lines, script_lines

    batch = bool(args.script or args.command)
    options = ShellOptions(
        probe=probe,
        json=args.json,
        yes=args.yes,
        verbose=args.verbose,
        allow_shell=args.allow_shell,
        interactive=not batch,
        variables=dict(_definition(text) for text in args.define),
    )
    try:
        lines = script_lines(args.script) if args.script else []
        if args.command:
            lines = command_lines(args.command)
    except FlashshError as exc:
        if early is not None:
            early.discard()
        print(f"error: {exc}", file=sys.stderr)
        return 1

    shell = FlashShell(options)
    shell.early_open = early
    try:
        if args.target:
            connect = [("", 0, f"connect {shlex.quote(args.target)}")]
            status = shell.run_lines(connect)
            if status and batch:
                return status
        if batch:
            return shell.run_lines(lines)
        return shell.cmdloop()
    except KeyboardInterrupt:
        return 130
    finally:
        shell.detach()


def _definition(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise SystemExit(f"flashsh: error: -D takes NAME=VALUE, not {text!r}")
    return name.strip(), value


if __name__ == "__main__":
    raise SystemExit(main())
