"""Test harness: real AVR bootloader firmware in simavr behind a pseudo-terminal."""
