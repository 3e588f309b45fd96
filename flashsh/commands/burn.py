"""``burn_bootloader``: the ISP recipe for putting a bootloader on a chip, as one command."""

from __future__ import annotations

import argparse

import cmd2

from flashsh import burn, fuse_ops
from flashsh.commands.fuses import preset_choices
from flashsh.images import load_image
from flashsh.numbers import hexaddr, human_size
from flashsh.progress import ctrl_c_stops_between_pages
from flashsh.shell import FlashShell


class BurnCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "Fuses and lock bits"

    burn_parser = cmd2.Cmd2ArgumentParser(
        description="Put a bootloader on a chip through an ISP programmer: chip erase, "
        "unlock (lock 0x3F), the preset's fuses, the bootloader image with verify, then "
        "the preset's lock bits (0x0F keeps the bootloader from overwriting itself).",
        epilog="Example: burn_bootloader stk500boot_v2_mega2560.hex --preset klipper",
    )
    burn_parser.add_argument("file", completer=cmd2.Cmd.path_complete, help="bootloader .hex")
    burn_parser.add_argument(
        "--preset", default="klipper", choices_provider=preset_choices, help="fuse preset"
    )
    burn_parser.add_argument(
        "--force", action="store_true", help="allow what the brick guard refuses"
    )

    @cmd2.with_argparser(burn_parser)
    def do_burn_bootloader(self, args: argparse.Namespace) -> None:
        """Erase the chip and burn FILE with the preset's fuses and lock bits."""
        session = self._cmd.require_session()
        burn.require_isp(session)
        image = load_image(self._cmd.resolve_input(args.file))
        plan = fuse_ops.plan_preset(session, args.preset, force=args.force)
        burn.check_image(image, plan)
        self._cmd.note(
            f"burn {args.file} ({human_size(image.size)} at {hexaddr(image.start)}) with "
            f"the {args.preset} preset:\n{plan.text()}"
        )
        if not self._cmd.confirm("erase the whole chip and burn it?"):
            self._cmd.fail("nothing done: the answer was not yes")
            return
        with ctrl_c_stops_between_pages() as cancel:
            result = burn.burn_bootloader(
                session,
                image,
                preset=args.preset,
                force=args.force,
                progress=self._cmd.progress(),
                cancel=cancel,
            )
        lock = result["lock"]["written"].get("lock", {}).get("read_back")
        self._cmd.report(
            result,
            f"bootloader burned and verified at {hexaddr(image.start)}; fuses set"
            + (f"; lock 0x{lock:02x}" if lock is not None else ""),
        )
