"""Process-wide memory settings for long-running programs on small edge boxes."""

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas; call before any thread starts. False where not glibc.

    glibc gives each thread that allocates its own arena, and memory freed in one is not
    reused by another: with a buffer writer thread and the MQTT thread beside the event
    loop, that costs an agent a few MB of resident memory for nothing (`make bench-agent`).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def settle_startup_objects() -> None:
    """Move what start-up built (configuration, drivers) out of the collector's sight.

    Tens of thousands of tag objects live as long as the process; frozen, they are not
    traversed again by every full collection the hot path's allocations trigger.
    """
    gc.collect()
    gc.freeze()
