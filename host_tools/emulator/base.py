# What the virtual board (board.py) and its CPython runtime (cpy.py) share. board.py loads cpy.py
# when a board runs under CPython; cpy.py imports from here, never from board.py (no cycle).
from pathlib import Path

SHIMS = Path(__file__).resolve().parent / "shims"


class PowerCut(BaseException):
    """Unwinds a CPython board thread at a blocking point when its power goes."""
