"""Retention of the file sinks: delete whole date partitions older than N days."""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

_DATE_DIR_RE = re.compile(r"^date=(\d{4})-(\d{2})-(\d{2})$")


def expired_dates(base: Path, retention_days: float, now: float | None = None) -> list[Path]:
    """Date partitions under ``base/<kind>/`` whose whole day ended more than ``retention_days`` ago."""
    if not retention_days > 0:
        raise ValueError(f"retention_days must be > 0, got {retention_days!r}")
    cutoff = (time.time() if now is None else now) - retention_days * 86_400.0
    out: list[Path] = []
    if not base.is_dir():
        return out
    for kdir in base.iterdir():
        if not kdir.is_dir() or kdir.name.startswith("."):
            continue
        for ddir in kdir.iterdir():
            m = _DATE_DIR_RE.match(ddir.name)
            if not m or not ddir.is_dir():
                continue
            day = _dt.datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=_dt.timezone.utc)
            if (day + _dt.timedelta(days=1)).timestamp() <= cutoff:
                out.append(ddir)
    return sorted(out)


def apply_retention(base: Path, retention_days: float, now: float | None = None) -> int:
    """Delete expired date partitions under ``base`` (``<root>/<format>``). Returns how many.

    Each partition is first renamed to a dot-name, which readers skip, so no
    reader ever sees a half-deleted day.
    """
    n = 0
    for ddir in expired_dates(base, retention_days, now):
        hidden = ddir.with_name(f".{ddir.name}.deleting-{secrets.token_hex(4)}")
        try:
            os.replace(ddir, hidden)
        except OSError as exc:
            log.warning("retention: cannot remove %s: %s", ddir, exc)
            continue
        shutil.rmtree(hidden, ignore_errors=True)
        n += 1
        log.info("retention: removed %s (older than %g days)", ddir, retention_days)
    # leftovers of an interrupted deletion
    if base.is_dir():
        for kdir in base.iterdir():
            if kdir.is_dir():
                for d in kdir.iterdir():
                    if d.name.startswith(".date=") and ".deleting-" in d.name:
                        shutil.rmtree(d, ignore_errors=True)
    return n
