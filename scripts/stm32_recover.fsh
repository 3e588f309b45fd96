# Bring back an STM32 whose application hangs at start, or locked itself with read-out
# or write protection. With BOOT0 high the ROM bootloader runs whatever flash holds.
#
#   flashsh --protocol stm32 -D FIRMWARE=firmware.bin -s scripts/stm32_recover.fsh /dev/ttyUSB0
#   flashsh --protocol stm32 --entry boot0=rts,reset=dtr -D FIRMWARE=firmware.bin \
#       -s scripts/stm32_recover.fsh /dev/ttyUSB0
#
# Set BOOT0 to 1 and press reset first (or wire BOOT0/RESET to RTS/DTR and pass --entry).
# Everything in flash is erased. A .bin goes to 0x08000000 unless you give an address.
info
# Lifts read-out protection; the ROM erases all of flash to do it. Does nothing (and
# erases nothing) on a chip without it.
unprotect readout
# Clears write protection, which would otherwise leave pages silently unchanged.
unprotect write
mass_erase
program ${FIRMWARE} verify
# Leaves the bootloader: Go to 0x08000000, or with --entry, BOOT0 low and a reset.
reset
