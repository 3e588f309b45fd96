"""Serve a simulated board on a pseudo-terminal.

    python -m flashsh.sims stk500v1 --chip atmega328p [--bootloader optiboot]
        [--version 8.3] [--baud 115200] [--throttle 1] [--image FILE] [--dump FILE.bin]
    python -m flashsh.sims can --node katapult:aabbccddeeff --node klipper:112233445566
        [--bitrate 1000000] [--throttle 1] [--fault drop:3]

Prints the pty path (one line) and serves until SIGTERM or SIGINT; then writes the flash
dump if asked. Opening the pty resets the board, as opening an Arduino's port does. For
``can`` the pty is an slcan adapter (:mod:`flashsh.sims.slcan`) on a simulated bus.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from flashsh.sims import SIMS, USB_SIMS, sim_class
from flashsh.sims.pty import PtyServer

#: USB simulators are no serial ports: they are reached as sim:// targets or through
#: --usb-backend flashsh.sims.usb_bus:backend (docs/usb.md).
SERIAL_SIMS = sorted(set(SIMS) - USB_SIMS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flashsh.sims",
        description="Serve a simulated bootloader on a pseudo-terminal.",
        epilog=_option_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "protocol", choices=[*SERIAL_SIMS, "can"], help="which bootloader protocol, or can"
    )
    parser.add_argument("--chip", help="part name, e.g. atmega328p")
    parser.add_argument("--bootloader", help="optiboot or atmegaboot (stk500v1)")
    parser.add_argument("--version", dest="fw_version", help="bootloader version, e.g. 4.4")
    parser.add_argument("--baud", help="the bootloader's baud rate")
    parser.add_argument("--throttle", help="1 = real time (default), 0 = no delays")
    parser.add_argument("--image", help="file programmed into flash before the start")
    parser.add_argument("--fault", action="append", help="fault to show, e.g. drop:200")
    parser.add_argument(
        "--node", action="append", help="can: a node, KIND:UUID[,NAME=VALUE...] (repeatable)"
    )
    parser.add_argument("--bitrate", help="can: the bus bit rate (default 1000000)")
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other simulator option (same names as in sim:// URLs)",
    )
    parser.add_argument("--dump", type=Path, help="write the whole flash here at exit")
    parser.add_argument("--dump-eeprom", type=Path, help="write the EEPROM here at exit")
    parser.add_argument(
        "--no-reset-on-open",
        action="store_true",
        help="opening the pty does not reset the board",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log events to stderr")
    return parser


def _option_help() -> str:
    from flashsh.sims.can_bus import OPTIONS as CAN_OPTIONS

    lines = ["can options (--node KIND:UUID,NAME=VALUE; --option NAME=VALUE for all nodes):"]
    lines += [f"  {option:15} {text}" for option, text in CAN_OPTIONS.items()]
    for name in SERIAL_SIMS:
        options = getattr(sim_class(name), "OPTIONS", {})
        lines.append(f"{name} options (--option NAME=VALUE, or in sim://{name}?NAME=VALUE):")
        lines += [f"  {option:11} {text}" for option, text in options.items()]
    return "\n".join(lines)


def _options(args: argparse.Namespace) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    named = {
        "chip": args.chip,
        "bootloader": args.bootloader,
        "version": args.fw_version,
        "baud": args.baud,
        "throttle": args.throttle,
        "image": args.image,
        "bitrate": args.bitrate,
    }
    for name, value in named.items():
        if value is not None:
            options[name] = [value]
    if args.fault:
        options["fault"] = list(args.fault)
    if args.node:
        options["node"] = list(args.node)
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option {item!r}: expected NAME=VALUE")
        options.setdefault(name.strip().lower(), []).append(value)
    return options


def _serve_can(args: argparse.Namespace) -> int:
    from flashsh.sims.can_bus import start_sim_can_options
    from flashsh.sims.slcan import SlcanAdapter

    def log(text: str) -> None:
        if args.verbose:
            print(f"sim: {text}", file=sys.stderr, flush=True)

    try:
        handle = start_sim_can_options(_options(args))
    except ValueError as exc:
        print(f"python -m flashsh.sims: {exc}", file=sys.stderr)
        return 2
    adapter = SlcanAdapter(handle, log=log).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: adapter.stop())
    print(adapter.path, flush=True)
    try:
        adapter.wait()
    finally:
        adapter.close()
        handle.stop()
        for node in handle.nodes:
            for event in node.events:
                log(f"{node.uuid} [{event.t:.3f}] {event.what}")
    return 0


def _events(sim: object) -> list:
    mcu = getattr(sim, "mcu", None)
    return mcu.events if mcu is not None else getattr(sim, "events", [])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.protocol == "can":
        return _serve_can(args)
    try:
        sim = sim_class(args.protocol).from_options(_options(args), host_baud=None)
    except ValueError as exc:
        print(f"python -m flashsh.sims: {exc}", file=sys.stderr)
        return 2

    def log(text: str) -> None:
        if args.verbose:
            print(f"sim: {text}", file=sys.stderr, flush=True)

    # Boards without an auto-reset circuit (an STM32 with a BOOT0 jumper) say so.
    reset_on_open = not args.no_reset_on_open and getattr(sim, "resets_on_open", True)
    server = PtyServer(sim, reset_on_open=reset_on_open, log=log)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    log(sim.describe())
    print(server.path, flush=True)
    try:
        server.serve()
    finally:
        server.close()
        if args.verbose:
            for event in _events(sim):
                log(f"[{event.t:.3f}] {event.what}")
        if args.dump:
            args.dump.write_bytes(sim.flash)
        if args.dump_eeprom:
            args.dump_eeprom.write_bytes(sim.eeprom)
    return 0


if __name__ == "__main__":
    sys.exit(main())
