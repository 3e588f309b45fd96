# Flash Klipper (or any firmware) onto an Arduino Due, SAM3X8E, through the ROM's SAM-BA
# monitor, and make it boot from flash.
#
#   flashsh -D FIRMWARE=out/klipper.bin -s scripts/due_klipper.fsh /dev/ttyACM0
#
# Native USB port: if a sketch or Klipper runs, `bootloader` reboots it into the ROM
# monitor (the 1200-baud touch; flash is kept). Programming port: the same touch ERASES
# the whole flash first, and flashsh asks before doing it (--yes answers).
# By hand: press ERASE, then RESET.
bootloader
info

# A .bin goes to 0x80000, the start of flash. Pages are erased as they are written;
# afterwards GPNVM1 (boot from flash) is set and read back.
program ${FIRMWARE:-klipper.bin} verify

# Without GPNVM1 the Due boots the ROM monitor for ever.
gpnvm read
reset
