# Flash Klipper through the STM32 HID bootloader (1209:beba), e.g. an SKR Mini E3 with
# Klipper's "2KiB bootloader" offset (0x08000800) or an F4 board with "16KiB" (0x08004000).
#
#   flashsh -D FIRMWARE=out/klipper.bin -s scripts/hid_bootloader_klipper.fsh usb:1209:beba
#
# The HID bootloader cannot read flash back: flashsh checks that every kilobyte was
# acknowledged, and `reset` reboots into the new firmware.
info
program ${FIRMWARE:-klipper.bin} reset
