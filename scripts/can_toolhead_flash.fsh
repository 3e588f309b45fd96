# Flash Klipper onto a CAN toolhead (EBB36/42, SB2040, SHT36, ...) through Katapult,
# read it back, then start it.
#
#   sudo systemctl stop klipper       # a node klippy is using answers no query
#   flashsh --can-channel can0 -s scripts/can_toolhead_flash.fsh \
#       -D UUID=aabbccddeeff -D FIRMWARE=$HOME/klipper/out/klipper.bin
#
# The node may be running Klipper or sitting in Katapult: `bootloader` brings it to
# Katapult either way (and says so when it is there already). Nothing is started unless
# every block read back identical.

# Who is on the bus, and what each node runs.
query

# The node to flash, by its UUID (printer.cfg's canbus_uuid).
connect ${UUID}
bootloader
info

# Blocks go up from the application start Katapult reports; each is read back.
program ${FIRMWARE:-klipper.bin} verify reset
