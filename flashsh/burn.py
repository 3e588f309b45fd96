"""Burning a bootloader through an ISP programmer, as one flow.

The steps are the ones the Arduino and Klipper guides give to avrdude: chip erase, unlock
(lock 0x3F), the fuses, the bootloader image with verify, then the boot section locked
(lock 0x0F, so the bootloader cannot overwrite itself). Everything that can be refused is
refused before the chip is erased.
"""

from __future__ import annotations

from typing import Any

from flashsh import fuse_ops, fuses, operations
from flashsh.errors import ImageError, UnsupportedError
from flashsh.images import Image
from flashsh.numbers import hexaddr
from flashsh.progress import Cancel, Progress
from flashsh.protocols.base import Capability
from flashsh.session import Session

UNLOCKED = 0x3F


def boot_section(plan: fuse_ops.FusePlan) -> tuple[int, bool] | None:
    """(boot section start, BOOTRST programmed) under the planned fuses, if the part has
    BOOTSZ/BOOTRST fields."""
    for name, value in plan.new.items():
        if name == "lock":
            continue
        fields = fuses.decode(plan.part.byte(name), value)["fields"]
        if "BOOTSZ" in fields and "BOOTRST" in fields:
            return int(fields["BOOTSZ"]["start"]), bool(fields["BOOTRST"]["on"])
    return None


def check_image(image: Image, plan: fuse_ops.FusePlan) -> None:
    """Refuse a bootloader image that the planned fuses would never run."""
    section = boot_section(plan)
    if section is None:
        return
    start, reset_to_boot = section
    if image.start < start:
        raise ImageError(
            f"{image.source} starts at {hexaddr(image.start)}, below the boot section the "
            f"fuses set up ({hexaddr(start)})",
            "pick a preset whose BOOTSZ fits this bootloader, or the right bootloader file",
        )
    if image.start != start:
        raise ImageError(
            f"{image.source} starts at {hexaddr(image.start)}, but the fuses make the chip "
            f"jump to {hexaddr(start)} on reset",
            "pick a preset whose BOOTSZ matches this bootloader",
        )
    if not reset_to_boot:
        raise ImageError(
            "the preset leaves BOOTRST unprogrammed: the bootloader would never run",
            "use a preset made for a bootloader",
        )


def require_isp(session: Session) -> None:
    """Refuse at once when the link cannot erase the chip: no bootloader can burn one."""
    if Capability.CHIP_ERASE not in session.capabilities:
        raise UnsupportedError(
            f"{session.info.bootloader} cannot burn a bootloader",
            "connect an ISP programmer (STK500v2, AVR ISP mkII) to the board's ICSP header",
        )


def burn_bootloader(
    session: Session,
    image: Image,
    *,
    preset: str,
    force: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> dict[str, Any]:
    """Erase the chip and put ``image`` on it with the preset's fuses and lock bits."""
    require_isp(session)
    fuse_plan = fuse_ops.plan_preset(session, preset, force=force)
    check_image(image, fuse_plan)
    lock_after = fuse_plan.lock_after if fuse_plan.lock_after is not None else UNLOCKED
    steps: dict[str, Any] = {}
    with session.use() as bootloader:
        bootloader.erase_chip()  # also the only way to clear lock bits
    steps["erase"] = True
    steps["unlock"] = fuse_ops.apply(session, fuse_ops.plan_lock(session, UNLOCKED))
    fuse_plan = fuse_ops.plan_preset(session, preset, force=force)
    steps["fuses"] = fuse_ops.apply(session, fuse_plan)
    steps["program"] = operations.program(
        session, image, verify=True, progress=progress, cancel=cancel
    )
    steps["lock"] = fuse_ops.apply(session, fuse_ops.plan_lock(session, lock_after, force=force))
    return {"chip": fuse_plan.part.name, "preset": preset, "file": image.source, **steps}
