# Flash an Arduino Uno or Nano (ATmega328P, optiboot at 115200 baud) with the blink example.
#
#   flashsh -s scripts/flash_uno_optiboot.fsh /dev/ttyACM0
#   flashsh -s scripts/flash_uno_optiboot.fsh "sim://stk500v1?chip=atmega328p"
#
# Files are found next to this script, so it runs from any directory.
info
program firmware/blink_atmega328p.hex verify
verify_image firmware/blink_atmega328p.hex
reset
