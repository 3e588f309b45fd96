"""Small commands for scripts: pauses and messages."""

from __future__ import annotations

import argparse
import time

import cmd2

from flashsh.shell import FlashShell


class MiscCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "Scripting"

    sleep_parser = cmd2.Cmd2ArgumentParser(description="Wait, e.g. for a board to reboot.")
    sleep_parser.add_argument("ms", type=int, help="milliseconds to wait")

    @cmd2.with_argparser(sleep_parser)
    def do_sleep(self, args: argparse.Namespace) -> None:
        """Wait MS milliseconds (the session is kept alive meanwhile)."""
        if args.ms < 0:
            self._cmd.fail("sleep takes a number of milliseconds >= 0")
            return
        time.sleep(args.ms / 1000)
        self._cmd.report({"slept_ms": args.ms})

    echo_parser = cmd2.Cmd2ArgumentParser(description="Print a message (useful in scripts).")
    echo_parser.add_argument("words", nargs="*", help="text to print")

    @cmd2.with_argparser(echo_parser)
    def do_echo(self, args: argparse.Namespace) -> None:
        """Print the words given."""
        text = " ".join(args.words)
        self._cmd.report({"text": text}, text)
