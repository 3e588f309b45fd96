"""What the commands do, as plain functions over a Session.

The shell, ``-c``, scripts and tests all call these; none of them prints. Each returns a
dict that the shell shows and ``--json`` emits as is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flashsh.errors import (
    FlashshError,
    Interrupted,
    TargetError,
    UnsupportedError,
    VerifyError,
)
from flashsh.images import Image, check_fits
from flashsh.numbers import hexaddr
from flashsh.progress import Cancel, NoProgress, Progress
from flashsh.protocols.base import Bootloader, Capability, Region
from flashsh.session import Session

Page = tuple[int, bytes]


def ranges_text(pages: Iterable[int], page_size: int) -> str:
    """Describe page addresses as merged ranges: ``0x0000-0x0fff, 0x2000-0x20ff``."""
    spans: list[list[int]] = []
    for address in sorted(pages):
        if spans and spans[-1][1] == address:
            spans[-1][1] = address + page_size
        else:
            spans.append([address, address + page_size])
    return ", ".join(f"{hexaddr(a)}-{hexaddr(b - 1)}" for a, b in spans) or "nothing"


def _check_cancel(cancel: Cancel | None, done: list[int], page_size: int, what: str) -> None:
    if cancel is not None and cancel.requested:
        raise Interrupted(
            f"stopped by Ctrl-C while {what}; written so far: {ranges_text(done, page_size)}",
            "run the same command again to finish",
        )


def _with_written(
    exc: FlashshError, address: int, written: list[int], page_size: int
) -> FlashshError:
    """The same error, saying which page failed and which pages are already on the chip."""
    message = (
        f"writing {hexaddr(address)} failed: {exc.message}; "
        f"written before that: {ranges_text(written, page_size)}"
    )
    return type(exc)(message, exc.hint)


def plan_pages(image: Image, region: Region) -> list[Page]:
    """The pages an image touches, gaps and page tails filled with 0xFF.

    A page-erasing bootloader must be sent every page that should end up 0xFF, so pages
    are never skipped for being blank.
    """
    return [(address, data) for address, data, _ in image.pages(region.page_size)]


def _read_twice_if_different(
    bootloader: Bootloader, region: Region, address: int, expected: bytes
) -> bytes:
    """Read back; on a mismatch read once more, so that a byte garbled on the line is not
    reported as a flash that differs. A bootloader that checks on the chip (a CRC)
    spares the read when the data matches."""
    if bootloader.crc_matches(region, address, expected):
        return expected
    actual = bootloader.read(region, address, len(expected))
    if actual != expected:
        actual = bootloader.read(region, address, len(expected))
    return actual


def _first_difference(expected: bytes, actual: bytes) -> int:
    return next(i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b)


def program(
    session: Session,
    image: Image,
    *,
    verify: bool = False,
    diff: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> dict[str, object]:
    """Write an image page by page; with ``diff`` read first and write only what differs;
    with ``verify`` read back what was written. Raises ImageError before touching the chip
    when the image does not fit, or (unless ``force``) cannot run where it is placed;
    Interrupted on Ctrl-C, VerifyError on a mismatch."""
    progress = progress or NoProgress()
    memory = session.memory_map
    session.bootloader.check_request(image, diff=diff)
    check_fits(image, memory)
    if not force:
        session.bootloader.check_image(image)
    if verify and Capability.READ not in session.capabilities:
        # Refused before anything is written, not after.
        raise UnsupportedError(
            f"{session.bootloader.name} cannot read back, so it cannot verify",
            session.bootloader.no_read_reason,
        )
    region = memory.region_for(image.start)
    if "w" not in region.access:
        raise TargetError(f"{region.name} is read-only on this target")
    pages = plan_pages(image, region)
    started = time.monotonic()
    written: list[int] = []
    erased: list[tuple[int, int]] = []
    with session.use() as bootloader:
        todo = pages
        if diff:
            todo = _pages_that_differ(bootloader, region, pages, progress, cancel)
            todo = _whole_units_if_erased_on_write(bootloader, region, pages, todo)
        if _needs_erase(bootloader, memory.flash, region):
            todo, erased = _erase_for_write(bootloader, region, pages, todo, progress, cancel)
        progress.start("writing", len(todo) * region.page_size)
        try:
            for address, data in todo:
                _check_cancel(cancel, written, region.page_size, "writing")
                try:
                    bootloader.write_page(region, address, data)
                except FlashshError as exc:
                    raise _with_written(exc, address, written, region.page_size) from exc
                written.append(address)
                progress.advance(len(data))
            if todo:
                bootloader.finish_writes()
        finally:
            progress.finish()
        if verify:
            _verify_pages(bootloader, region, todo, progress, cancel, written)
    return {
        "file": image.source,
        "region": region.name,
        "start": image.start,
        "end": image.end,
        "bytes": image.size,
        "pages_total": len(pages),
        "pages_written": len(written),
        "pages_unchanged": len(pages) - len(todo),
        "erased": spans_text(erased),
        "verified": verify,
        "seconds": round(time.monotonic() - started, 3),
        "notes": bootloader.write_notes(),
    }


def spans_text(spans: Iterable[tuple[int, int]]) -> str:
    """``0x08000000-0x08000bff`` for [start, end) spans, touching ones merged."""
    merged: list[list[int]] = []
    for low, high in sorted(spans):
        if merged and merged[-1][1] == low:
            merged[-1][1] = high
        else:
            merged.append([low, high])
    return ", ".join(f"{hexaddr(a)}-{hexaddr(b - 1)}" for a, b in merged) or "nothing"


def _whole_units_if_erased_on_write(
    bootloader: Bootloader, region: Region, pages: list[Page], todo: list[Page]
) -> list[Page]:
    """Where writing the first page of an erase unit erases the whole unit (Katapult),
    a changed page means sending every image page of its unit, first page first."""
    if Capability.PAGE_ERASE_ON_WRITE not in bootloader.capabilities:
        return todo
    if region.erase_size <= region.page_size or not todo:
        return todo
    units = {
        u
        for address, data in todo
        for u in bootloader.erase_units(region, address, address + len(data))
    }
    return [(a, d) for a, d in pages if any(lo <= a < hi for lo, hi in units)]


def _needs_erase(bootloader: Bootloader, flash: Region, region: Region) -> bool:
    return Capability.ERASE_BEFORE_WRITE in bootloader.capabilities and region == flash


def _erase_for_write(
    bootloader: Bootloader,
    region: Region,
    pages: list[Page],
    todo: list[Page],
    progress: Progress,
    cancel: Cancel | None,
) -> tuple[list[Page], list[tuple[int, int]]]:
    """Erase the pages or sectors that ``todo`` touches, and nothing else; return the
    image pages to write (every one inside an erased unit, since the erase blanked the
    unchanged ones too) and the units erased. Whatever else those units held is lost, as
    with any tool that erases before writing."""
    units = sorted(
        {
            u
            for address, data in todo
            for u in bootloader.erase_units(region, address, address + len(data))
        }
    )
    rewrite = [(a, d) for a, d in pages if any(lo < a + len(d) and a < hi for lo, hi in units)]
    spans: list[list[int]] = []
    for low, high in units:
        if spans and spans[-1][1] == low:
            spans[-1][1] = high
        else:
            spans.append([low, high])
    done: list[tuple[int, int]] = []
    progress.start("erasing", sum(high - low for low, high in units))
    try:
        for low, high in spans:
            if cancel is not None and cancel.requested:
                raise Interrupted(
                    f"stopped by Ctrl-C while erasing; erased so far: {spans_text(done)}, "
                    "nothing written",
                    "run the same command again",
                )
            try:
                bootloader.erase_range(region, low, high)
            except FlashshError as exc:
                erased = f"; erased before that: {spans_text(done)}" if done else ""
                raise type(exc)(f"{exc.message}{erased}", exc.hint) from exc
            done.append((low, high))
            progress.advance(high - low)
    finally:
        progress.finish()
    return rewrite, units


def _pages_that_differ(
    bootloader: Bootloader,
    region: Region,
    pages: list[Page],
    progress: Progress,
    cancel: Cancel | None,
) -> list[Page]:
    if Capability.READ not in bootloader.capabilities:
        raise UnsupportedError(
            f"{bootloader.name} cannot read flash, so `diff` cannot compare",
            bootloader.no_read_reason,
        )
    differ = []
    progress.start("comparing", len(pages) * region.page_size)
    try:
        for address, data in pages:
            _check_cancel(cancel, [], region.page_size, "comparing (nothing written)")
            if bootloader.crc_matches(region, address, data):
                pass
            elif bootloader.read(region, address, len(data)) != data:
                differ.append((address, data))
            progress.advance(len(data))
    finally:
        progress.finish()
    return differ


def _verify_pages(
    bootloader: Bootloader,
    region: Region,
    pages: list[Page],
    progress: Progress,
    cancel: Cancel | None,
    written: list[int],
) -> None:
    if Capability.READ not in bootloader.capabilities:
        raise UnsupportedError(
            f"{bootloader.name} cannot read back, so it cannot verify", bootloader.no_read_reason
        )
    progress.start("verifying", len(pages) * region.page_size)
    try:
        for address, data in pages:
            _check_cancel(cancel, written, region.page_size, "verifying (writing was complete)")
            try:
                actual = _read_twice_if_different(bootloader, region, address, data)
            except FlashshError as exc:
                raise type(exc)(
                    f"reading back {hexaddr(address)} failed: {exc.message}; every page was "
                    "written, but not all were verified",
                    exc.hint,
                ) from exc
            if actual != data:
                at = _first_difference(data, actual)
                bad = sum(a != b for a, b in zip(data, actual, strict=False))
                raise VerifyError(
                    f"verify failed at {hexaddr(address + at)}: chip has 0x{actual[at]:02x}, "
                    f"image has 0x{data[at]:02x} ({bad} bytes differ in that page)",
                    "program again; if it persists the flash may be worn or locked",
                )
            progress.advance(len(data))
    finally:
        progress.finish()


def verify_image(
    session: Session,
    image: Image,
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> dict[str, object]:
    """Compare the chip with an image, byte for byte; raises VerifyError on a mismatch."""
    progress = progress or NoProgress()
    check_fits(image, session.memory_map, allow_bootloader=True)
    region = session.memory_map.region_for(image.start)
    started = time.monotonic()
    checked = 0
    with session.use() as bootloader:
        if Capability.READ not in bootloader.capabilities:
            raise UnsupportedError(
                f"{bootloader.name} cannot read back, so it cannot verify",
                bootloader.no_read_reason,
            )
        progress.start("verifying", image.size)
        try:
            for address, data in image.segments:
                for offset in range(0, len(data), region.page_size):
                    _check_cancel(cancel, [], region.page_size, "verifying (nothing written)")
                    chunk = data[offset : offset + region.page_size]
                    actual = _read_twice_if_different(bootloader, region, address + offset, chunk)
                    if actual != chunk:
                        at = _first_difference(chunk, actual)
                        raise VerifyError(
                            f"{image.source} differs from the chip at "
                            f"{hexaddr(address + offset + at)}: chip has 0x{actual[at]:02x}, "
                            f"image has 0x{chunk[at]:02x}",
                            "program the image, or check that it was built for this board",
                        )
                    checked += len(chunk)
                    progress.advance(len(chunk))
        finally:
            progress.finish()
    return {
        "file": image.source,
        "bytes": checked,
        "match": True,
        "seconds": round(time.monotonic() - started, 3),
    }


def read_memory(
    session: Session,
    region: Region,
    address: int,
    length: int,
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> bytes:
    """Read ``length`` bytes at absolute ``address`` in ``region``."""
    progress = progress or NoProgress()
    if not region.contains(address, length):
        raise TargetError(
            f"{hexaddr(address)}+{length} is outside {region.name} "
            f"({hexaddr(region.start)}-{hexaddr(region.end - 1)})"
        )
    out = bytearray()
    with session.use() as bootloader:
        if Capability.READ not in bootloader.capabilities or "r" not in region.access:
            raise UnsupportedError(
                f"{bootloader.name} cannot read {region.name}", bootloader.no_read_reason
            )
        progress.start("reading", length)
        try:
            while len(out) < length:
                if cancel is not None and cancel.requested:
                    raise Interrupted(
                        f"stopped by Ctrl-C after reading {len(out)} of {length} bytes",
                        "nothing was written; run the command again",
                    )
                # Blocks end on page boundaries so every request is aligned.
                here = address + len(out)
                block = min(length - len(out), region.page_size - (here % region.page_size))
                out += bootloader.read(region, here, block)
                progress.advance(block)
        finally:
            progress.finish()
    return bytes(out)


def erase_bounds(session: Session, start: int, length: int) -> tuple[int, int]:
    """[first, end) that erasing ``length`` bytes at ``start`` really erases: rounded out
    to the bootloader's pages or sectors. Raises TargetError outside flash or over the
    bootloader."""
    memory = session.memory_map
    flash = memory.flash
    if length <= 0:
        raise TargetError("erase needs a length above 0")
    end = start + length
    if not flash.contains(start, length):
        raise TargetError(
            f"{hexaddr(start)}-{hexaddr(end - 1)} is outside flash "
            f"({hexaddr(flash.start)}-{hexaddr(flash.end - 1)})"
        )
    units = session.bootloader.erase_units(flash, start, end)
    first, end = units[0][0], units[-1][1]
    if memory.bootloader and end > memory.bootloader[0] and first < memory.bootloader[1]:
        lo, hi = memory.bootloader
        raise TargetError(
            f"{hexaddr(first)}-{hexaddr(end - 1)} overlaps the bootloader "
            f"({hexaddr(lo)}-{hexaddr(hi - 1)})",
            f"erase below {hexaddr(lo)}; the bootloader is never erased",
        )
    return first, end


def erase(
    session: Session,
    start: int | None = None,
    length: int | None = None,
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> dict[str, object]:
    """Erase flash: the whole application area, or ``[start, start+length)`` rounded out to
    pages (``erase_bounds``). Never touches the bootloader. Uses the bootloader's chip or
    page erase where it has one; otherwise writes 0xFF pages, which is what an erase
    leaves behind."""
    progress = progress or NoProgress()
    memory = session.memory_map
    flash = memory.flash
    whole = start is None
    if start is None:
        first, end = memory.app_start, memory.writable_end()
    else:
        first, end = erase_bounds(session, start, length or 0)
    started = time.monotonic()
    done: list[int] = []
    with session.use() as bootloader:
        if whole and Capability.CHIP_ERASE in bootloader.capabilities:
            bootloader.erase_chip()
            method = "chip erase"
        elif Capability.PAGE_ERASE in bootloader.capabilities:
            progress.start("erasing", end - first)
            try:
                bootloader.erase_range(flash, first, end)
                progress.advance(end - first)
            finally:
                progress.finish()
            method = "page erase" if flash.erase_size <= 4096 else "sector erase"
        else:
            blank = bytes([0xFF]) * flash.page_size
            progress.start("erasing", end - first)
            try:
                for address in range(first, end, flash.page_size):
                    _check_cancel(cancel, done, flash.page_size, "erasing")
                    bootloader.write_page(flash, address, blank)
                    done.append(address)
                    progress.advance(flash.page_size)
                bootloader.finish_writes()
            finally:
                progress.finish()
            method = "0xFF written over each page"
    return {
        "start": first,
        "end": end,
        "bytes": end - first,
        "method": method,
        "seconds": round(time.monotonic() - started, 3),
    }


def write_bytes(session: Session, region: Region, address: int, data: bytes) -> dict[str, object]:
    """Change a few bytes: read the pages they fall in, patch, write the pages back."""
    if not region.contains(address, len(data)):
        raise TargetError(f"{hexaddr(address)}+{len(data)} is outside {region.name}")
    memory = session.memory_map
    if region.name == "flash" and memory.bootloader:
        lo, hi = memory.bootloader
        if address + len(data) > lo and address < hi:
            raise TargetError(
                f"{hexaddr(address)} is inside the bootloader ({hexaddr(lo)}-{hexaddr(hi - 1)})"
            )
    size = region.page_size
    first = address - (address % size)
    end = address + len(data)
    end += -end % size
    with session.use() as bootloader:
        if Capability.READ not in bootloader.capabilities:
            raise UnsupportedError(
                f"{bootloader.name} cannot read, so cannot patch bytes", bootloader.no_read_reason
            )
        erase_first = _needs_erase(bootloader, memory.flash, region)
        if erase_first:
            # Flash that cannot be rewritten in place: keep the whole pages or sectors
            # around the bytes, erase them, write them back patched.
            units = bootloader.erase_units(region, address, address + len(data))
            first, end = units[0][0], units[-1][1]
        current = bytearray(bootloader.read(region, first, end - first))
        current[address - first : address - first + len(data)] = data
        if erase_first:
            bootloader.erase_range(region, first, end)
        for page in range(first, end, size):
            chunk = bytes(current[page - first : page - first + size])
            if not (erase_first and chunk == b"\xff" * len(chunk)):
                bootloader.write_page(region, page, chunk)
        bootloader.finish_writes()
    return {"region": region.name, "address": address, "bytes": len(data)}
