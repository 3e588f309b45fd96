"""Shared by every suite: make tests/ importable for the helpers that live here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
