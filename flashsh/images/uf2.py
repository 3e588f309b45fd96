"""UF2 files: independent 512-byte blocks, each carrying data for one address.

Layout and flags: microsoft/uf2 README.md ("File format"). Readers keep only blocks meant
for main flash, of one family; writers emit 256-byte payloads at 256-byte aligned
addresses, the one combination every UF2 bootloader accepts, laid out as the reference
converter (microsoft/uf2 utils/uf2conv.py) does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from flashsh.chips.uf2 import family_text
from flashsh.errors import ImageError
from flashsh.images.image import Image
from flashsh.images.sniff import hint_for_wrong_format
from flashsh.numbers import hexaddr

# microsoft/uf2 README.md, "File format": all words little-endian.
MAGIC_START0 = 0x0A324655  # "UF2\n"
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
BLOCK_SIZE = 512
MAX_PAYLOAD = 476
#: The payload size every bootloader accepts (uf2-samdx1 and the RP2040 ROM take no other).
PAYLOAD = 256

FLAG_NOT_MAIN_FLASH = 0x00000001
FLAG_FILE_CONTAINER = 0x00001000
FLAG_FAMILY_ID = 0x00002000
FLAG_MD5 = 0x00004000
FLAG_EXTENSION_TAGS = 0x00008000

_HEADER = struct.Struct("<8I")


@dataclass(frozen=True)
class Block:
    """One UF2 block, decoded."""

    flags: int
    address: int
    payload_size: int
    block_no: int
    num_blocks: int
    #: Family ID when FLAG_FAMILY_ID is set, else the file size (or 0).
    word28: int
    data: bytes  # the payload, ``payload_size`` bytes

    @property
    def family(self) -> int | None:
        return self.word28 if self.flags & FLAG_FAMILY_ID else None

    @property
    def main_flash(self) -> bool:
        """Data for the chip's flash: not a comment and not a piece of a named file."""
        return not self.flags & (FLAG_NOT_MAIN_FLASH | FLAG_FILE_CONTAINER)

    def pack(self) -> bytes:
        header = _HEADER.pack(
            MAGIC_START0,
            MAGIC_START1,
            self.flags,
            self.address,
            self.payload_size,
            self.block_no,
            self.num_blocks,
            self.word28,
        )
        body = self.data.ljust(MAX_PAYLOAD, b"\x00")
        return header + body + struct.pack("<I", MAGIC_END)


def parse_block(raw: bytes) -> Block | None:
    """Decode 512 bytes; None when any of the three magic words is wrong (a bootloader
    treats such a sector as file-system traffic)."""
    if len(raw) != BLOCK_SIZE:
        return None
    words = _HEADER.unpack_from(raw)
    if words[0] != MAGIC_START0 or words[1] != MAGIC_START1:
        return None
    if struct.unpack_from("<I", raw, BLOCK_SIZE - 4)[0] != MAGIC_END:
        return None
    flags, address, size, number, total, word28 = words[2:]
    return Block(flags, address, size, number, total, word28, bytes(raw[32 : 32 + size]))


class Uf2Image(Image):
    """An Image read from a UF2 file, remembering what a drive needs to copy it as is."""

    #: Family of the blocks kept (None: blocks without a family ID).
    family: int | None = None
    #: Every family with main-flash blocks in the file (None for blocks without one).
    families: tuple[int | None, ...] = ()
    #: The file exactly as read.
    raw: bytes = b""
    #: The kept blocks are numbered 0..n-1 with one numBlocks, 256-byte payloads at
    #: 256-byte aligned addresses: a drive can take the file unchanged.
    copyable: bool = False


def read_uf2(
    source: str,
    data: bytes,
    *,
    address: int | None = None,
    default_address: int = 0,
    family: int | None = None,
) -> Uf2Image:
    """Read the main-flash blocks of one family. ``family`` picks it from a file with
    several; without it a file must hold one. Blocks flagged "not main flash" and file
    containers are skipped (said in ``notes``). ``address`` and ``default_address`` are
    ignored: a UF2 block carries its own address. Raises ImageError naming the file."""
    if not data.startswith(struct.pack("<II", MAGIC_START0, MAGIC_START1)):
        raise ImageError(
            f"{source} is not a UF2 file: it does not start with a UF2 block",
            hint_for_wrong_format(data, "uf2") or "check that it is the right file",
        )
    if len(data) % BLOCK_SIZE:
        raise ImageError(
            f"{source} is {len(data)} bytes, not a whole number of 512-byte UF2 blocks",
            "the file was cut short; build or download it again",
        )
    blocks = list(_blocks(source, data))
    kept = [b for b in blocks if b.main_flash]
    found = tuple(dict.fromkeys(b.family for b in kept))
    chosen = _choose_family(source, found, family)
    kept = [b for b in kept if b.family == chosen]
    notes = _skipped_notes(blocks, kept, found, chosen)
    image = Uf2Image(_segments(source, kept), source=source, format="uf2", notes=notes)
    image.family = chosen
    image.families = found
    image.raw = bytes(data)
    image.copyable = _copyable(kept)
    return image


def _blocks(source: str, data: bytes) -> Iterator[Block]:
    for index in range(len(data) // BLOCK_SIZE):
        raw = data[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE]
        block = parse_block(raw)
        if block is None:
            raise ImageError(
                f"{source}: block {index} (offset {index * BLOCK_SIZE}) is not a UF2 block "
                "(its magic numbers are wrong)",
                "the file is damaged; build or download it again",
            )
        if block.payload_size > MAX_PAYLOAD:
            raise ImageError(
                f"{source}: block {index} claims {block.payload_size} bytes of data, more "
                f"than the {MAX_PAYLOAD} a UF2 block holds",
                "the file is damaged; build or download it again",
            )
        yield block


def _choose_family(source: str, found: tuple[int | None, ...], wanted: int | None) -> int | None:
    if not found:
        raise ImageError(
            f"{source} holds no blocks for main flash (all are comments or embedded files)",
            "check that it is a firmware file",
        )
    if wanted is not None:
        if wanted in found:
            return wanted
        if found == (None,):
            return None  # blocks without a family ID suit any board
        raise ImageError(
            f"{source} holds no blocks for {family_text(wanted)}; it has "
            f"{', '.join(family_text(f) for f in found)}",
            "use the file built for this board",
        )
    if len(found) > 1:
        raise ImageError(
            f"{source} holds blocks for {len(found)} families: "
            f"{', '.join(family_text(f) for f in found)}",
            "flashsh writes one family at a time: connect to the board's drive (it picks "
            "its own family) or use the file built for one board",
        )
    return found[0]


def _skipped_notes(
    blocks: list[Block], kept: list[Block], found: tuple[int | None, ...], chosen: int | None
) -> list[str]:
    notes = []
    comments = sum(1 for b in blocks if b.flags & FLAG_NOT_MAIN_FLASH)
    files = sum(
        1 for b in blocks if b.flags & FLAG_FILE_CONTAINER and not b.flags & FLAG_NOT_MAIN_FLASH
    )
    if comments:
        notes.append(f"skipped {comments} blocks marked 'not main flash'")
    if files:
        notes.append(f"skipped {files} blocks of embedded files")
    others = [f for f in found if f != chosen]
    if others:
        notes.append(
            f"kept the {len(kept)} blocks for {family_text(chosen)}; ignored those for "
            + ", ".join(family_text(f) for f in others)
        )
    return notes


def _segments(source: str, blocks: list[Block]) -> list[tuple[int, bytes]]:
    """One segment per address, a repeated identical block counted once (the spec lets
    blocks repeat); two different payloads for one address are an error."""
    seen: dict[int, bytes] = {}
    for block in blocks:
        earlier = seen.get(block.address)
        if earlier is not None and earlier != block.data:
            raise ImageError(
                f"{source}: two blocks carry different data for {hexaddr(block.address)}",
                "the file is damaged or two builds were joined; build it again",
            )
        seen[block.address] = block.data
    return sorted(seen.items())


def _copyable(blocks: list[Block]) -> bool:
    totals = {b.num_blocks for b in blocks}
    numbers = sorted(b.block_no for b in blocks)
    return (
        len(totals) == 1
        and numbers == list(range(len(blocks)))
        and totals == {len(blocks)}
        and all(b.payload_size == PAYLOAD and b.address % PAYLOAD == 0 for b in blocks)
    )


# ---------------------------------------------------------------------- writing


def encode_pages(pages: Iterable[tuple[int, bytes]], family: int | None) -> bytes:
    """UF2 blocks for ``(address, data)`` pieces of at most 256 bytes, numbered in the
    given order. With a family the blocks carry it (flag 0x2000); without, word 28 is 0,
    as uf2conv.py writes without ``-f``. Payloads shorter than 256 are zero-padded."""
    chunks = list(pages)
    flags = FLAG_FAMILY_ID if family is not None else 0
    out = bytearray()
    for number, (address, data) in enumerate(chunks):
        if len(data) > PAYLOAD:
            raise ValueError(f"{len(data)} bytes at {hexaddr(address)}: more than {PAYLOAD}")
        block = Block(
            flags, address, PAYLOAD, number, len(chunks), family or 0, data.ljust(PAYLOAD, b"\0")
        )
        out += block.pack()
    return bytes(out)


def image_to_uf2(image: Image, family: int | None, *, fill: int | None = None) -> bytes:
    """Convert an image: one block per 256-byte aligned page that holds data, in address
    order. Bytes of a page the image does not cover are ``fill``: by default 0x00 for a
    .bin (uf2conv.py zero-pads its last chunk) and 0xFF for everything else (uf2conv.py
    fills HEX blocks with 0xFF), so that a .bin at an aligned address and an address-
    ordered .hex come out byte for byte as uf2conv.py makes them."""
    if fill is None:
        fill = 0x00 if image.format == "bin" else 0xFF
    pages = [(p.address, p.data) for p in image.pages(PAYLOAD, fill)]
    return encode_pages(pages, family)


def encode_uf2(address: int, data: bytes) -> bytes:
    """A memory dump as UF2 without a family, 256-byte chunks from ``address``: what
    ``uf2conv.py -c -b ADDRESS`` makes of the same .bin (``save_image`` writer)."""
    pages = ((address + at, data[at : at + PAYLOAD]) for at in range(0, len(data), PAYLOAD))
    return encode_pages(pages, None)
