# Burn the stk500v2 bootloader onto an ATmega2560 (Arduino Mega 2560, RAMPS and most
# 8-bit printer mainboards) through an ISP programmer on the ICSP header.
#
#   flashsh -s scripts/burn_bootloader_mega2560.fsh /dev/ttyACM0
#   flashsh -D BOOTLOADER=my_stk500boot.hex -s scripts/burn_bootloader_mega2560.fsh /dev/ttyACM0
#   flashsh -s scripts/burn_bootloader_mega2560.fsh "sim://stk500v2?mode=isp&chip=atmega2560"
#
# BOOTLOADER defaults to the file Debian's arduino-core-avr package installs.
# The steps are the Klipper guide's; `burn_bootloader FILE --preset klipper` does the same
# in one command.
info
# Chip erase: the only way to clear lock bits. Fuses are not touched by it.
mass_erase
lock write 0x3F
# lfuse 0xFF: the board's 16 MHz crystal. A factory-fresh chip runs on its internal
# RC oscillator, so the guard asks for --force: every Mega 2560 board has the crystal.
fuse preset klipper --force
program ${BOOTLOADER:-/usr/share/arduino/hardware/arduino/avr/bootloaders/stk500v2/stk500boot_v2_mega2560.hex} verify
# BLB1 mode 3: the bootloader can no longer overwrite itself.
lock write 0x0F
fuse read
lock read
