"""Keep freed memory in the process instead of returning it to the system after every step.

glibc serves blocks above ``M_MMAP_THRESHOLD`` (at most 32 MiB by default) with their own
``mmap`` and unmaps them on ``free``; a training step that allocates and frees large tensors then
pays page faults for every fresh page, every step. On the cross-feedback VAE's largest searched
configuration that was most of an epoch's time (docs/tuning_protocol.md "Cheap trials"). The
entry points call :func:`keep_freed_memory` first, so no environment variable is needed
(``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` did the same from outside).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
KEEP = 2**31 - 1  # mallopt takes an int: ~2 GiB, above any one tensor the models allocate


def keep_freed_memory() -> bool:
    """Tell glibc to serve large blocks from the heap and not to trim it; True if it took effect.
    Elsewhere (musl, macOS, Windows) a no-op with one log line."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        log.info(
            "allocator: not glibc (%s); freed memory handling left as it is", platform.libc_ver()
        )
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        ok = all(
            libc.mallopt(opt, ctypes.c_int(KEEP)) == 1
            for opt in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)
        )
    except (OSError, AttributeError) as e:
        log.info("allocator: mallopt unavailable (%s); freed memory handling left as it is", e)
        return False
    if not ok:
        log.warning("allocator: glibc refused mallopt; large blocks are still unmapped on free")
    return ok
