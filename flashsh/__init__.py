"""flashsh: one interactive shell for microcontroller bootloaders."""

__version__ = "0.1.0"
