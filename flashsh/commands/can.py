"""CAN bus and Klipper commands: ``query`` lists node UUIDs, ``bootloader`` asks a
running Klipper to reboot into Katapult."""

from __future__ import annotations

import argparse
from dataclasses import replace

import cmd2

from flashsh.errors import NoAnswerError
from flashsh.shell import FlashShell
from flashsh.transports.can import QUERY_WINDOW, CanBus, CanNodeLink, CanOptions, FoundNode


def can_options(app: FlashShell, args: argparse.Namespace) -> CanOptions:
    """The shell's CAN options with this command's overrides."""
    base = app.options.probe.can
    return replace(
        base,
        interface=getattr(args, "can_interface", None) or base.interface,
        channel=getattr(args, "can_channel", None) or base.channel,
        bitrate=getattr(args, "bitrate", None) or base.bitrate,
    )


def add_can_arguments(parser: cmd2.Cmd2ArgumentParser) -> None:
    parser.add_argument("--can-interface", metavar="NAME", help="python-can interface")
    parser.add_argument("--can-channel", metavar="CHANNEL", help="e.g. can0, /dev/ttyACM0")
    parser.add_argument("--bitrate", type=int, help="CAN bitrate (default 1000000)")


class CanCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "CAN and Klipper"

    query_parser = cmd2.Cmd2ArgumentParser(
        description="List the CAN nodes that answer a UUID query: Katapult and Klipper.",
        epilog="Nodes that klippy is using have a node id and do not answer. The bus is "
        "--can-interface/--can-channel/--bitrate, else python-can's configuration, else "
        "socketcan can0 at 1000000 bit/s.",
    )
    query_parser.add_argument(
        "--timeout", type=float, default=QUERY_WINDOW, help="seconds to collect answers (2)"
    )
    add_can_arguments(query_parser)

    @cmd2.with_argparser(query_parser)
    def do_query(self, args: argparse.Namespace) -> None:
        """Send the UUID query and list every node that answers."""
        options = can_options(self._cmd, args)
        session = self._cmd.session
        link = session.bootloader.link if session else None
        if isinstance(link, CanNodeLink) and not _differs(options, link.bus):
            with session.lock:  # type: ignore[union-attr]
                nodes = link.bus.query(args.timeout)
            where = link.bus.description
        else:
            bus = CanBus(options)
            try:
                nodes = bus.query(args.timeout)
                where = bus.description
            finally:
                bus.close()
        self._cmd.can_uuids = [node.uuid for node in nodes]
        if not nodes:
            raise NoAnswerError(
                f"no CAN node answered the query on {where} within {args.timeout:g} s",
                "check the bitrate (--bitrate; nodes run at 1000000 or 500000), the wiring "
                "and terminators; nodes klippy is using do not answer: stop klippy first",
            )
        rows = [{"uuid": n.uuid, "application": n.application} for n in nodes]
        self._cmd.report(rows, _table(nodes))

    bootloader_parser = cmd2.Cmd2ArgumentParser(
        description="Ask the running Klipper firmware to reboot into Katapult, then "
        "connect to Katapult.",
        epilog="Over CAN the request goes to the node's UUID; on USB the port is set to "
        "1200 baud with DTR low; on a UART Klipper's 'Request Serial Bootloader' text is "
        "sent. Without Katapult on the board, Klipper starts the chip's own bootloader.",
    )

    @cmd2.with_argparser(bootloader_parser)
    def do_bootloader(self, args: argparse.Namespace) -> None:
        """Reboot a board running Klipper into Katapult and connect to it."""
        session = self._cmd.require_session()
        question = session.bootloader.request_warning()
        if question and not self._cmd.confirm(question):
            self._cmd.fail("nothing done: the answer was not yes")
            return
        changed = session.request_bootloader()
        self._cmd.update_prompt()
        info = session.info
        if not changed:
            self._cmd.report(
                {"already": True, "bootloader": info.bootloader},
                f"already in the bootloader: {info.bootloader}",
            )
            return
        self._cmd.report(
            {"already": False, "bootloader": info.bootloader, "chip": info.chip},
            f"now in {info.bootloader} on {info.chip} ({session.target})",
        )


def _differs(options: CanOptions, bus: CanBus) -> bool:
    return bool(
        (options.channel and options.channel != bus.channel)
        or (options.interface and options.interface not in (bus.interface, "sim"))
    )


def _table(nodes: list[FoundNode]) -> str:
    lines = [f"{'UUID':<12}  APPLICATION"]
    lines += [f"{n.uuid:<12}  {n.application}" for n in nodes]
    lines.append(f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} answered")
    return "\n".join(lines)
