"""The shell's commands, grouped by concern as cmd2 CommandSets."""

from __future__ import annotations

import cmd2


def all_command_sets() -> list[cmd2.CommandSet]:
    from flashsh.commands.burn import BurnCommands
    from flashsh.commands.can import CanCommands
    from flashsh.commands.connection import ConnectionCommands
    from flashsh.commands.fuses import FuseCommands
    from flashsh.commands.memory import MemoryCommands
    from flashsh.commands.misc import MiscCommands
    from flashsh.commands.sam import SamCommands
    from flashsh.commands.target import TargetCommands
    from flashsh.commands.usb import UsbCommands

    return [
        ConnectionCommands(),
        MemoryCommands(),
        MiscCommands(),
        FuseCommands(),
        BurnCommands(),
        TargetCommands(),
        CanCommands(),
        SamCommands(),
        UsbCommands(),
    ]
