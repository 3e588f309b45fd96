"""SAM chip data and identification: what each chip reports picks the right part
(samba.md §7), and the geometry and bootloader sizes follow (§8)."""

from __future__ import annotations

import struct

import pytest

from flashsh.chips.sam import sam_by_cidr, sam_by_did, sam_part, sam_parts
from flashsh.errors import TargetError
from flashsh.protocols.samba import connect, identify_chip
from flashsh.protocols.samba_flash import NvmD21, NvmD51
from flashsh.protocols.samba_wire import SambaWire
from tests.protocols.samba_links import ScriptedLink

#: What each chip's monitor returns for the addresses bossac's probe order reads.
REGISTERS = {
    "at91sam3x8e": {0x0: 0x20001000, 0xE000ED00: 0x412FC230, 0x400E0740: 0,
                    0x400E0940: 0x285E0A61, 0x400E0944: 0},
    "atsam4e8e": {0x0: 0x20001000, 0xE000ED00: 0x410FC241, 0x4: 0x00800091,
                  0x400E0740: 0xA3CC0CE0, 0x400E0744: 0x00120208},
    "atsam4e16e": {0x0: 0x20001000, 0xE000ED00: 0x410FC241, 0x4: 0x00800091,
                   0x400E0740: 0xA3CC0CE0, 0x400E0744: 0x00120200},
    "atsamd21g18a": {0x0: 0x20002DD0, 0xE000ED00: 0x410CC601, 0x41002018: 0x10010305},
    "atsamd51j19a": {0x0: 0x20002DD0, 0xE000ED00: 0x410FC241, 0x4: 0x000004A5,
                     0x41002018: 0x60060305},
}  # fmt: skip


def register_link(registers: dict[int, int], version: bytes = b"v1.1 Jan 1 2020\n\r"):
    """A USB monitor that answers N#, V#, R and w from ``registers``; anything else
    read is a test failure (a real chip would hang)."""

    def answer(data: bytes) -> bytes:
        if data == b"N#":
            return b"\n\r"
        if data == b"V#":
            return version
        if data.startswith(b"R"):
            return struct.pack("<I", registers[0])
        if data.startswith(b"w"):
            address = int(data[1:9], 16)
            assert address in registers, f"read of {address:#x}, which this chip lacks"
            return struct.pack("<I", registers[address])
        return b""

    link = ScriptedLink(answer)
    link.usb_id = "03eb:6124"
    return link


@pytest.mark.parametrize("key", sorted(REGISTERS))
def test_identification_finds_each_part(key):
    wire = SambaWire(register_link(REGISTERS[key]))
    chip, seen = identify_chip(wire)
    assert chip is not None and chip.key == key, seen


def test_sam3x_is_read_at_the_second_chipid_address_only_after_a_zero():
    link = register_link(REGISTERS["at91sam3x8e"])
    identify_chip(SambaWire(link))
    reads = [s for s in link.sent if s.startswith(b"w")]
    assert reads == [
        b"w00000000,4#",
        b"wE000ED00,4#",
        b"w400E0740,4#",
        b"w400E0940,4#",
        b"w400E0944,4#",
    ]


def test_masks_ignore_silicon_revision_and_ext_bit():
    assert sam_by_did(0x10010F05).key == "atsamd21g18a"  # DIE and REVISION differ
    assert sam_by_did(0x10010306) is None  # another device
    assert sam_by_cidr(0x285E0A7F, 0).key == "at91sam3x8e"  # VERSION bits
    assert sam_by_cidr(0xA3CC0CE0, 0x00120200).key == "atsam4e16e"  # EXID decides


@pytest.mark.parametrize(
    ("key", "base", "size", "page", "erase", "planes"),
    [
        ("at91sam3x8e", 0x80000, 512 * 1024, 256, 256, 2),
        ("atsam4e8e", 0x400000, 512 * 1024, 512, 4096, 1),
        ("atsamd21g18a", 0, 256 * 1024, 64, 256, 1),
        ("atsamd51j19a", 0, 512 * 1024, 512, 8192, 1),
    ],
)
def test_geometry(key, base, size, page, erase, planes):
    chip = sam_parts()[key]
    assert (chip.flash_base, chip.flash_size, chip.page_size) == (base, size, page)
    assert (chip.erase_size, chip.planes) == (erase, planes)


def test_sam3x_pages_count_within_their_plane():
    chip = sam_part("sam3x8e")
    assert chip.plane_of(0x80000) == (0, 0)
    assert chip.plane_of(0xBFF00) == (0, 1023)
    assert chip.plane_of(0xC0000) == (1, 0)  # FARG restarts in plane 1
    assert chip.plane_of(0xC0100) == (1, 1)


@pytest.mark.parametrize(
    ("bootprot", "size"), [(7, 0), (6, 512), (3, 4096), (2, 8192), (1, 16384), (0, 32768)]
)
def test_samd21_bootprot(bootprot, size):
    controller = NvmD21(SambaWire(ScriptedLink()), sam_part("atsamd21g18a"))
    assert controller.bootprot_size(0xD8E0C7F8 | bootprot) == size


def test_samd51_bootprot():
    controller = NvmD51(SambaWire(ScriptedLink()), sam_part("atsamd51j19a"))
    assert controller.bootprot_size(13 << 26) == 16384  # uf2-samdx1
    assert controller.bootprot_size(15 << 26) == 0


def test_unknown_chip_is_named():
    registers = {**REGISTERS["atsamd21g18a"], 0x41002018: 0x10010399}
    with pytest.raises(TargetError, match=r"no data for the chip \(DSU DID 0x10010399\)"):
        connect(register_link(registers))


def test_unknown_name():
    with pytest.raises(TargetError, match="known: at91sam3x8e"):
        sam_part("atsamx99")
