"""Handing the heap that start-up used, and let go, back to the system.

Importing pydantic and building the config's validators, connecting, and importing the picture
encoder leave several MiB of freed blocks in glibc's heap, between blocks still in use, so glibc
keeps them: an idle agent stays 5 MiB larger than what it holds. `malloc_trim(0)` returns every
free page of the heap (glibc does this with madvise, so live blocks do not move). It runs once
after start-up and once after the encoder loads, not in a loop: an agent that has settled does
not grow (bench/fleet.py measures both). On a libc without it (musl), nothing happens.
"""

from __future__ import annotations

import ctypes


def release_free_heap() -> None:
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
