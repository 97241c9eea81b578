"""How much memory an image may take: the budget checked before reading pixels."""

from __future__ import annotations

import os
from pathlib import Path

GIB = 1024**3
BUDGET_ENV = "LIGHTMYCELLS_MAX_IMAGE_GIB"
# Processing an image makes float copies of it (peak measured at ~5x a uint16 image), so an image
# may take at most this fraction of the available memory.
AVAILABLE_FRACTION = 0.2


def available_memory() -> int | None:
    """Bytes this process can still allocate: the least of free RAM (``MemAvailable``), the cgroup
    limit (containers, SLURM) and the address-space limit (``ulimit -v``); ``None`` when unknown."""
    limits = [_meminfo_available(), _cgroup_available(), _rlimit_available()]
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def image_budget() -> tuple[int | None, str]:
    """Largest image size in bytes allowed in memory, and how that number was chosen."""
    override = os.environ.get(BUDGET_ENV)
    if override:
        try:
            return int(float(override) * GIB), f"{BUDGET_ENV}={override}"
        except ValueError:
            pass
    available = available_memory()
    if available is None:
        return None, "unknown available memory"
    return int(
        available * AVAILABLE_FRACTION
    ), f"{AVAILABLE_FRACTION:.0%} of the {available / GIB:.1f} GiB available"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def _cgroup_available() -> int | None:
    root = Path("/sys/fs/cgroup")
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = (root / limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:
                return None
            return max(0, int(limit) - int((root / usage_file).read_text()))
        except (OSError, ValueError):
            continue
    return None


def _rlimit_available() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        used = 0
    return max(0, soft - used)
