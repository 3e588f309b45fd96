# Flash Klipper onto an STM32F103 board with the stm32duino (Maple) bootloader
# (1eaf:0003): Blue Pill, Maple Mini, boards set up for `make flash FLASH_DEVICE=1eaf:0003`.
#
#   flashsh -D FIRMWARE=out/klipper.bin -s scripts/bluepill_maple_klipper.fsh usb:1eaf:0003
#
# The bootloader listens only for a moment after reset unless BOOT1 is high or no
# application is present. The address chooses the alternate setting, as `dfu-util -a 2`
# does: 0x08002000 for the 8 KiB bootloader (Klipper's "8KiB bootloader" offset).
info
program ${FIRMWARE:-klipper.bin} 0x08002000 verify reset
