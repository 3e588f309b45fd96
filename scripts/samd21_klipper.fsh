# Flash firmware onto a SAMD21 board (Arduino Zero, Adafruit M0, many printer boards)
# through its SAM-BA bootloader, leaving the bootloader itself alone.
#
#   flashsh -D FIRMWARE=out/klipper.bin -s scripts/samd21_klipper.fsh /dev/ttyACM0
#
# Get the bootloader: press reset twice quickly, or `bootloader` from a running sketch or
# Klipper. The bootloader's size comes from BOOTPROT and the board (8 KiB here): a .bin
# goes right above it, and an image linked for another start is refused.
info

# Rows are erased as they are written; verify uses the bootloader's own CRC, so nothing is
# read back unless it differs.
program ${FIRMWARE:-klipper.bin} verify reset
