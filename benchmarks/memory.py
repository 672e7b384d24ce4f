"""Process memory figures shared by the benchmarks (Linux /proc; run as scripts)."""

from __future__ import annotations

from pathlib import Path


def reset_peak_rss() -> bool:
    """Reset VmHWM (Linux: writing 5 to clear_refs); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_since_reset() -> float | None:
    """Bytes: the high-water mark since ``reset_peak_rss`` (None where /proc is missing)."""
    return _status("VmHWM:")


def current_rss() -> float:
    return _status("VmRSS:") or 0.0


def gb(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f} GB"
