"""JSON lines segments: one JSON object per row, one row per line."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

import orjson

log = logging.getLogger(__name__)


class JsonLinesFormat:
    """Rows as ``.jsonl``; objects (labels, payloads, details) stay JSON objects."""

    name = "json"
    ext = "jsonl"

    def write(self, f: BinaryIO, kind: str, rows: list[dict[str, Any]]) -> None:
        nl = orjson.OPT_APPEND_NEWLINE
        f.write(b"".join([orjson.dumps(r, option=nl) for r in rows]))

    def read(self, path: Path, kind: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:  # cannot happen for files this sink wrote
                    log.warning("skipping unreadable line %d of %s: %s", n, path, exc)
        return out
