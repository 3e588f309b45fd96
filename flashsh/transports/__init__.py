"""Links to a target: byte streams (serial ports, sims), later USB and CAN."""
