"""The in-memory form of a firmware file: sorted, non-overlapping runs of bytes.

Every reader produces an :class:`Image`; everything that writes to a chip consumes one.
Addresses are absolute target addresses, the same numbers the user types.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from flashsh.errors import ImageError
from flashsh.numbers import hexaddr


class Segment(NamedTuple):
    """One contiguous run of image data; unpacks as ``address, data``."""

    address: int
    data: bytes

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.address + len(self.data)


class Page(NamedTuple):
    """One page to send to the target; unpacks as ``address, data, has_data``."""

    address: int
    data: bytes
    #: False for a page that only fills a gap between segments (``pages(gaps=True)``).
    has_data: bool


class Image:
    """Firmware data for one memory region, read from one file.

    ``segments`` is sorted by address; segments never overlap and never touch (touching
    runs are joined), so two images with the same bytes compare equal segment by segment.
    """

    def __init__(
        self,
        segments: Iterable[tuple[int, bytes]],
        *,
        source: str = "",
        format: str = "",
        region: str = "flash",
        entry: int | None = None,
        notes: Iterable[str] = (),
        extra: Mapping[str, Image] | None = None,
    ) -> None:
        """Raises ImageError if two segments claim the same address."""
        #: File name as the user gave it, for messages.
        self.source = source
        #: Reader that produced the image: ``hex``, ``bin``, ``elf``.
        self.format = format
        #: Name of the MemoryMap region the data belongs to.
        self.region = region
        #: Start address recorded in the file (HEX type 03/05, ELF e_entry), if any.
        self.entry = entry
        #: Things the user should hear about that did not stop the load.
        self.notes: tuple[str, ...] = tuple(notes)
        #: Data for other regions found in the same file, by region name (AVR ELF eeprom).
        self.extra: dict[str, Image] = dict(extra or {})
        self.segments: tuple[Segment, ...] = _normalise(segments, source)
        self._starts = [s.address for s in self.segments]

    def __repr__(self) -> str:
        spans = ", ".join(f"{hexaddr(s.address)}+{len(s.data)}" for s in self.segments)
        return f"Image({self.source!r}, {self.format}, {self.region}: {spans or 'empty'})"

    @property
    def start(self) -> int:
        """Lowest address holding data (0 for an empty image)."""
        return self.segments[0].address if self.segments else 0

    @property
    def end(self) -> int:
        """One past the highest address holding data (0 for an empty image)."""
        return self.segments[-1].end if self.segments else 0

    @property
    def size(self) -> int:
        """Bytes of data, not counting gaps."""
        return sum(len(s.data) for s in self.segments)

    def contains(self, address: int) -> bool:
        """Whether the image holds a byte at ``address``."""
        index = self._segment_index(address)
        return index >= 0 and address < self.segments[index].end

    def data_at(self, address: int, length: int, fill: int = 0xFF) -> bytes:
        """Return ``length`` bytes from ``address``, with ``fill`` where the image has none."""
        out = bytearray([fill]) * length
        self._paste(out, address)
        return bytes(out)

    def pages(self, page_size: int, fill: int = 0xFF, *, gaps: bool = False) -> Iterator[Page]:
        """Yield the pages (aligned to multiples of ``page_size``) that hold image data.

        Page bytes the image does not cover are ``fill``. A page whose image data happens to
        be all 0xFF is still yielded: a page-erasing bootloader has to be sent it to leave
        it blank. With ``gaps`` the all-``fill`` pages between segments come too, marked
        ``has_data=False``, for callers that want the range written as one block.
        """
        if page_size <= 0:
            raise ValueError(f"page size must be positive, not {page_size}")
        for first, last in self._page_spans(page_size, gaps):
            for index in range(first, last):
                base = index * page_size
                page = bytearray([fill]) * page_size
                has_data = self._paste(page, base)
                yield Page(base, bytes(page), has_data)

    # ---------------------------------------------------------------- internals

    def _segment_index(self, address: int) -> int:
        """Index of the last segment starting at or below ``address`` (-1 if none)."""
        return bisect.bisect_right(self._starts, address) - 1

    def _paste(self, out: bytearray, address: int) -> bool:
        """Copy the image bytes inside [address, address+len(out)) into ``out``."""
        top = address + len(out)
        index = max(self._segment_index(address), 0)
        found = False
        for segment in self.segments[index:]:
            if segment.address >= top:
                break
            low, high = max(address, segment.address), min(top, segment.end)
            if low < high:
                out[low - address : high - address] = segment.data[
                    low - segment.address : high - segment.address
                ]
                found = True
        return found

    def _page_spans(self, page_size: int, gaps: bool) -> list[tuple[int, int]]:
        """Page index ranges [first, last) to visit, merged so no page comes twice."""
        spans: list[tuple[int, int]] = []
        for segment in self.segments:
            first = segment.address // page_size
            last = -(-segment.end // page_size)
            # Two segments may share a page; with ``gaps`` every range is bridged.
            if spans and (gaps or first < spans[-1][1]):
                spans[-1] = (spans[-1][0], max(last, spans[-1][1]))
            else:
                spans.append((first, last))
        return spans


def _normalise(segments: Iterable[tuple[int, bytes]], source: str) -> tuple[Segment, ...]:
    """Sort, drop empty runs, join touching runs; reject negative or doubled addresses."""
    ordered = sorted((int(a), bytes(d)) for a, d in segments if len(d))
    joined: list[tuple[int, bytearray]] = []
    for address, data in ordered:
        if address < 0:
            raise ImageError(f"{source}: negative address {address}", "check the address given")
        if joined:
            last_address, last_data = joined[-1]
            last_end = last_address + len(last_data)
            if address < last_end:
                raise ImageError(
                    f"{source}: data at {hexaddr(address)} is given twice",
                    "the file holds two sets of data for one address; rebuild it",
                )
            if address == last_end:
                last_data += data
                continue
        joined.append((address, bytearray(data)))
    return tuple(Segment(a, bytes(d)) for a, d in joined)
