# Flash Klipper (or any firmware) onto an STM32 through ST's ROM DFU bootloader
# (0483:df11): F0, F4, F7, G0, H7 and L4 boards such as the SKR Pro, Octopus or Spider.
#
#   flashsh -D FIRMWARE=out/klipper.bin -D START=0x08008000 -s scripts/stm32_dfu_klipper.fsh usb:0483:df11
#
# Get the ROM: hold BOOT0 high and press reset, or `bootloader` from a running Klipper
# built with USB. START is Klipper's "Bootloader offset": 0x08000000 without a bootloader,
# 0x08008000 behind a 32 KiB one. Only the sectors the image covers are erased.
info

# `reset` leaves DFU with the address pointer at START; the board leaving the bus right
# after is the expected end, not an error (dfu-util's "Error during download get_status").
program ${FIRMWARE:-klipper.bin} ${START:-0x08000000} verify reset
