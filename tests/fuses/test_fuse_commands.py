"""The fuse and lock commands through the shell, against a fake ISP programmer."""

from __future__ import annotations

import io

from shelldriver import Driver

MEGA_ON_CRYSTAL = {"lfuse": 0xFF, "hfuse": 0x99, "efuse": 0xFF}


def test_fuse_read_decodes_every_byte(isp):
    sh, _ = isp("atmega2560", fuses={"lfuse": 0xFF, "hfuse": 0xD8, "efuse": 0xFD})
    result = sh.ok("fuse read")
    assert result["chip"] == "ATmega2560"
    assert list(result["fuses"]) == ["lfuse", "hfuse", "efuse"]
    hfuse = result["fuses"]["hfuse"]
    assert (hfuse["value"], hfuse["hex"]) == (0xD8, "0xd8")
    boot = hfuse["fields"]["BOOTSZ"]
    assert (boot["words"], boot["start"]) == (4096, 0x3E000)
    assert hfuse["fields"]["BOOTRST"]["on"] is True
    # The chip reads unused bits as 1: 0xFD stays 0xFD, BODLEVEL decodes the same.
    assert result["fuses"]["efuse"]["fields"]["BODLEVEL"]["name"] == "2.7V"


def test_fuse_read_text(isp):
    sh, _ = isp("atmega168", json_output=False, fuses={"efuse": 0x04})
    text = sh.printed("fuse read")
    assert "ATmega168 fuses" in text
    assert "efuse 0xfc  1111 1100  (bits 7:3 unused, read as 1)" in text
    boot = next(line for line in text.splitlines() if "BOOTSZ" in line)
    assert "256W" in boot and "0x3e00" in boot


def test_write_reads_back_and_compares_under_the_mask(isp):
    sh, fake = isp("atmega168")
    result = sh.ok("fuse write efuse 0x04")
    assert fake.writes == [("efuse", 0x04)]
    written = result["written"]["efuse"]
    assert (written["old"], written["new"], written["read_back"]) == (0xF9, 0x04, 0xFC)
    assert written["fields"]["BOOTSZ"]["words"] == 256


def test_write_refused_by_the_guard_touches_nothing(isp):
    sh, fake = isp("atmega328p")
    error = sh.error("fuse write hfuse 0x59")
    assert error.startswith("refused: hfuse 0xd9 -> 0x59 would program RSTDISBL")
    assert error.endswith("(--force if you really mean it)")
    assert fake.writes == []
    result = sh.ok("fuse write hfuse 0x59 --force")
    assert fake.fuses["hfuse"] == 0x59
    assert any(w.startswith("forced: ") for w in result["warnings"])


def test_read_back_mismatch_names_expected_and_actual(isp):
    sh, _ = isp("atmega328p", stuck=("hfuse",))
    error = sh.error("fuse write hfuse 0xde")
    assert error.startswith("hfuse reads back 0xd9 after writing 0xde")


def test_spien_cannot_really_be_switched_off_over_isp(isp):
    # Even forced, the chip keeps SPIEN: the read-back check reports it.
    sh, fake = isp("atmega328p")
    assert "reads back 0xd9 after writing 0xf9" in sh.error("fuse write hfuse 0xf9 --force")
    assert fake.writes == [("hfuse", 0xF9)]


def test_set_changes_fields_bit_by_bit(isp):
    sh, fake = isp("atmega328p", fuses={"lfuse": 0xFF, "hfuse": 0xDE, "efuse": 0xFD})
    result = sh.ok("fuse set BOOTSZ=1024W EESAVE=on")
    assert fake.fuses["hfuse"] == 0xD2
    assert result["written"]["hfuse"]["fields"]["BOOTSZ"]["start"] == 0x7800
    assert result["unchanged"] == []
    assert fake.writes == [("hfuse", 0xD2)]


def test_set_shows_old_and_new_before_asking(isp, monkeypatch):
    sh, fake = isp("atmega328p", json_output=False, fuses=MEGA_ON_CRYSTAL | {"hfuse": 0xDE})
    questions = []
    sh.shell.options.interactive = True
    monkeypatch.setattr("sys.stdin", _Tty())
    monkeypatch.setattr(sh.shell, "read_input", lambda q: questions.append(q) or "n")
    text = sh.printed("fuse set BOOTSZ=2048W")
    assert "hfuse 0xde -> 0xd8   1101 1110 -> 1101 1000" in text
    assert "BOOTSZ   11 -> 00" in text and "2048 words (4 KiB) at 0x7000" in text
    assert questions == ["write hfuse? [y/N] "]
    assert fake.writes == [] and sh.shell.failed
    assert sh.shell.last_error == "not written: the answer was not yes"


def test_set_mistakes_are_one_line_errors(isp):
    sh, fake = isp("atmega328p")
    assert "no fuse field 'BOOTSIZE'" in sh.error("fuse set BOOTSIZE=1K")
    assert "ambiguous" in sh.error("fuse set BOOTSZ=10")
    assert "given twice" in sh.error("fuse set BOOTSZ=1K BOOTSZ=2K")
    assert fake.writes == []


def test_nothing_to_write(isp):
    sh, fake = isp("atmega328p")
    result = sh.ok("fuse write hfuse 0xd9")
    assert result["written"] == {} and result["unchanged"] == ["hfuse"]
    assert fake.writes == []


def test_preset_list(isp):
    sh, _ = isp("atmega2560")
    result = sh.ok("fuse preset")
    assert list(result["presets"]) == ["klipper", "arduino", "factory"]
    assert result["presets"]["klipper"]["values"] == {"lfuse": 0xFF, "hfuse": 0xD8, "efuse": 0xFD}
    assert result["lock_presets"]["bootloader-protect"]["value"] == 0x0F


def test_preset_klipper_on_a_board_already_on_its_crystal(isp):
    sh, fake = isp("atmega2560", fuses=MEGA_ON_CRYSTAL)
    result = sh.ok("fuse preset klipper")
    # Clock last; the low fuse already matches and is not written.
    assert fake.writes == [("efuse", 0xFD), ("hfuse", 0xD8)]
    assert result["unchanged"] == ["lfuse"]
    assert result["lock_after"] == 0x0F


def test_preset_klipper_on_a_factory_chip_needs_force(isp):
    sh, fake = isp("atmega2560")
    error = sh.error("fuse preset klipper")
    assert "would move CKSEL 0010 -> 1111" in error and "--force" in error
    assert fake.writes == []
    sh.ok("fuse preset klipper --force")
    assert fake.fuses == {"lfuse": 0xFF, "hfuse": 0xD8, "efuse": 0xFD}
    assert fake.writes[-1] == ("lfuse", 0xFF)


def test_unconfirmed_preset_needs_force(isp):
    sh, fake = isp("atmega32u4", fuses={"lfuse": 0x5E})
    assert "preset factory is not confirmed for ATmega32U4" in sh.error("fuse preset factory")
    assert fake.writes == []


def test_unknown_preset(isp):
    sh, _ = isp("atmega328p")
    assert sh.error("fuse preset klipper") == (
        "no fuse preset 'klipper' for ATmega328P (presets: arduino, factory)"
    )


def test_unknown_fuse_name_and_bad_value(isp):
    sh, _ = isp("atmega328p")
    assert "no fuse 'xfuse'" in sh.error("fuse write xfuse 0x12")
    assert "not a byte value" in sh.error("fuse write hfuse 0x123")


def test_lock_read_and_protect(isp):
    sh, fake = isp("atmega2560")
    assert sh.ok("lock read")["lock"]["fields"]["BLB1"]["name"] == "mode1"
    result = sh.ok("lock write bootloader-protect")
    assert fake.writes == [("lock", 0x0F)]
    assert result["written"]["lock"]["read_back"] == 0xCF  # unused bits read as 1
    assert sh.ok("lock read")["lock"]["fields"]["BLB1"]["name"] == "mode3"


def test_lock_guard(isp):
    sh, fake = isp("atmega2560")
    assert "freezes the fuses" in sh.error("lock write 0x3e")
    assert "stops the bootloader from writing" in sh.error("lock write 0x3b")
    assert fake.writes == []
    sh.ok("lock write 0x3e --force")
    assert fake.lock == 0xFE


def test_lock_bits_cannot_be_unprogrammed(isp):
    sh, fake = isp("atmega2560", lock=0x0F)
    error = sh.error("lock write unlock")
    assert "lock 0xcf -> 0x3f would unprogram bits of BLB1" in error
    assert "chip erase" in error and fake.writes == []


def test_a_bootloader_without_fuse_access(isp):
    sh, fake = isp("atmega328p", fuse_access=False)
    # Reads: the bootloader's own one line; writes are refused before anything is read.
    assert sh.error("fuse read").startswith("fakeisp cannot read fuses (use an ISP programmer")
    expected = "fake ISP programmer cannot write fuses or lock bits (use an ISP programmer"
    for line in ("fuse write hfuse 0xde", "fuse set EESAVE=on", "fuse preset arduino"):
        assert sh.error(line).startswith(expected), line
    assert sh.error("lock write 0x0f").startswith(expected)
    assert fake.writes == [] and fake.reads == 1  # only `fuse read` asked


def test_optiboot_on_the_simulator_has_no_fuse_access(isp):
    sh = Driver()
    try:
        sh.ok("connect 'sim://stk500v1?chip=atmega328p&throttle=0'")
        assert sh.error("fuse read") == (
            "stk500v1 cannot read fuses (use an ISP programmer (STK500v2, AVR ISP mkII))"
        )
        assert "optiboot" in sh.error("fuse write hfuse 0xde")
        assert sh.error("lock write 0x0f").endswith(
            "cannot write fuses or lock bits (use an ISP programmer (STK500v2, AVR ISP mkII))"
        )
        # Presets are data: listing them needs no fuse access.
        assert "arduino" in sh.ok("fuse preset")["presets"]
    finally:
        sh.shell.detach()


def test_not_connected():
    assert "not connected" in Driver().error("fuse read")


def complete(sh, line: str) -> list[str]:
    """What Tab offers at the end of ``line``, through cmd2's whole completion path."""
    text = line.rsplit(" ", 1)[-1]
    found = sh.shell.complete(text, line, len(line) - len(text), len(line))
    return [item.text for item in found]


def test_completion_of_fields_and_values(isp):
    sh, _ = isp("atmega168")
    assert complete(sh, "fuse set BOO") == ["BOOTRST=", "BOOTSZ="]
    boot = ["BOOTSZ=128W", "BOOTSZ=256W", "BOOTSZ=512W", "BOOTSZ=1024W"]
    assert complete(sh, "fuse set BOOTSZ=") == boot
    assert complete(sh, "fuse set EESAVE=on bodlevel=2") == ["bodlevel=2.7V"]
    assert complete(sh, "fuse set CKDIV8=o") == ["CKDIV8=on", "CKDIV8=off"]
    assert complete(sh, "fuse set BOOTSZ1=") == ["BOOTSZ1=0", "BOOTSZ1=1"]
    assert complete(sh, "fuse set NOPE=") == []


def test_completion_of_names(isp):
    sh, _ = isp("atmega2560")
    assert complete(sh, "fuse ") == ["preset", "read", "set", "write"]
    assert complete(sh, "fuse write ") == ["lfuse", "hfuse", "efuse"]
    assert complete(sh, "fuse preset k") == ["klipper"]
    assert complete(sh, "lock write b") == ["bootloader-protect"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True
