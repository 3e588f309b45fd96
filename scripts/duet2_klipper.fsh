# Flash firmware onto a Duet 2 WiFi/Ethernet (SAM4E8E) through the ROM's SAM-BA monitor.
#
#   flashsh -D FIRMWARE=out/klipper.bin -s scripts/duet2_klipper.fsh /dev/ttyACM0
#
# Get the monitor first: with the board powered, bridge the ERASE jumper, then press
# reset (this erases the flash and clears GPNVM1), or `bootloader` from running Klipper.
info

# The SAM4 can only erase-and-write inside its first 16 KiB, so flashsh erases each 4 KiB
# (8 pages) before writing it; then sets GPNVM1 and reads it back (a SAM4 sometimes needs
# a second try, which flashsh makes).
program ${FIRMWARE:-klipper.bin} verify
gpnvm read
reset
