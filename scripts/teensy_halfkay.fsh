# Flash a Teensy 2.0 or Teensy++ 2.0 (for example a Printrboard-style Teensy++ board)
# through PJRC's HalfKay bootloader (16c0:0478).
#
#   flashsh -D FIRMWARE=marlin.hex -s scripts/teensy_halfkay.fsh usb:16c0:0478
#
# Press the board's program button first. HalfKay erases the whole application on the
# first write and cannot read back; `reset` reboots into the new firmware.
info
program ${FIRMWARE:-firmware.hex} reset
