# Put the STM32duino USB bootloader on a Blue Pill (STM32F103C8) through the chip's ROM
# bootloader and a 3.3 V USB-serial adapter, after a backup of what was there.
#
#   flashsh --protocol stm32 -D BOOTLOADER=generic_boot20_pc13.bin \
#       -s scripts/stm32_bluepill_stm32duino.fsh /dev/ttyUSB0
#   flashsh --protocol stm32 -D BOOTLOADER=my_boot.bin \
#       -s scripts/stm32_bluepill_stm32duino.fsh "sim://stm32?chip=stm32f103c8"
#
# Wiring (docs/stm32.md): adapter TX to PA10, RX to PA9, GND to G; BOOT0 jumper to 1,
# BOOT1 to 0, then press reset. Put BOOT0 back to 0 afterwards. -D BACKUP=FILE names the
# backup (default bluepill-backup.bin, in the current directory).
info
read_bank flash ${BACKUP:-bluepill-backup.bin}
mass_erase
# A .bin goes to the start of flash, 0x08000000, where the STM32duino bootloader lives.
program ${BOOTLOADER} verify
verify_image ${BOOTLOADER}
reset
