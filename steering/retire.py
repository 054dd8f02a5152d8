"""Free a large object graph a piece at a time, so the interpreter can switch threads between the pieces.

Dropping the last reference to a routing table of 10,000 sites (decoded from etcd: every object its own)
frees ~100,000 objects in one cascade of deallocations, and no thread switch can interrupt a cascade: 6-11 ms
here with no UDP thread answering, at every table swap. ``retire`` takes the graph apart instead, from the
top: an object only this walk holds (its reference count says so) has its containers emptied one item at a
time onto the walk's stack, so each step frees one small object; an object anyone else still holds (a
variant the next render shares, a route the next table reuses) is only let go, and stays whole for its
other holders. Nothing it touches is visible to anyone else, by that same count. An object whose type sets the class
attribute ``_retire_whole`` holds only small flat data (a route's weights and reasons, a target's state, a
split): it is let go whole, its own deallocation a few µs, instead of walked (at 10,000 sites 5,000 routes of
some 17 objects each were most of a retire's 25-30 ms).

``trim`` then hands the pages malloc keeps free back to the system (glibc's ``malloc_trim``): a table that
arrives while the one before is still being taken apart has three alive for a moment, and without it that
high-water mark stayed in the DNS workers' resident memory for good (docs/benchmarks.md, "Memory").
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any

# Held by the walk alone: the local name and getrefcount's own argument.
_ALONE = 2


def retire(box: list[Any]) -> int:
    """Free ``box``'s one item piecewise (the box is emptied: the caller must hold no other reference).
    Returns the objects taken apart, for tests and logs."""
    stack: list[Any] = [box.pop()]
    taken = 0
    getrefcount = sys.getrefcount
    while stack:
        o = stack.pop()
        if getrefcount(o) > _ALONE:
            continue  # shared: dropping this reference frees nothing else
        kind = type(o)
        if kind is dict:
            while o:
                stack.append(o.popitem()[1])
        elif kind is list:
            while o:
                stack.append(o.pop())
        elif kind is tuple or kind is frozenset or kind is set:
            stack.extend(o)  # the container still holds them until it goes, on the next line
        else:
            if getattr(kind, "_retire_whole", False):
                taken += 1
                continue  # small and flat (the module's docstring): freed whole when ``o`` is next rebound
            d = getattr(o, "__dict__", None)
            if type(d) is not dict:
                continue  # a scalar, bytes, a slotted or native object: freed whole, small
            del d
            stack.append(vars(o))  # the instance goes now; its attribute dict is taken apart next
        taken += 1
        del o
    return taken


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (AttributeError, OSError):
        return None  # not glibc (musl, macOS): nothing to call, the allocator keeps its pages
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def trim() -> bool:
    """Give the memory malloc holds free back to the system, in every arena; True if some was. Without the
    interpreter (a ctypes call lets go of it): a few milliseconds for a DNS worker, off the event loop."""
    return bool(_TRIM(0)) if _TRIM is not None else False


def retire_and_trim(box: list[Any]) -> int:
    """``retire`` then ``trim``: for a thread that frees a whole table."""
    taken = retire(box)
    trim()
    return taken
