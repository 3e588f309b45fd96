# Burn optiboot onto an ATmega328P (Arduino Uno, Nano) through an ISP programmer.
#
#   flashsh -D BOOTLOADER=optiboot_atmega328.hex -s scripts/burn_bootloader_uno.fsh /dev/ttyACM0
#
# Chip erase, unlock, the Uno's fuses (lfuse 0xFF, hfuse 0xDE: 512-byte boot section,
# efuse 0xFD), the bootloader with verify, then lock 0x0F. --force because a fresh chip
# runs on its internal oscillator and the Uno has a 16 MHz crystal.
info
burn_bootloader ${BOOTLOADER} --preset arduino --force
fuse read
