"""Resident memory of this process from /proc (Linux): current, and peak since a reset."""

from __future__ import annotations

from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} (not Linux?)")


def rss_bytes() -> int:
    return _status("VmRSS")


def reset_peak() -> None:
    """Make the peak (VmHWM) restart from the current resident size (Linux clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_bytes() -> int:
    return _status("VmHWM")
