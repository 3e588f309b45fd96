# Back up a Melzi-style printer board (ATmega1284P with optiboot), then flash new firmware.
#
#   flashsh -s scripts/melzi_backup_then_flash.fsh /dev/ttyUSB0
#   flashsh -s scripts/melzi_backup_then_flash.fsh "sim://stk500v1?chip=atmega1284p&baud=57600"
#
# Many Melzi boards ship the 57600-baud build of optiboot: auto-detection tries 115200
# first, then 57600. Add --baud 57600 to skip the first try. Boards without the
# auto-reset jumper fitted need the reset button pressed just before flashsh connects.
info
# The whole application area (0x00000-0x1fbff) as it is now, to put back with
# `program melzi-backup.hex verify` if the new firmware misbehaves.
read_bank flash melzi-backup.hex 0 0x1fc00
program firmware/blink_atmega1284p.hex verify
reset
