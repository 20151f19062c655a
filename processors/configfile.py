"""Reading configuration files (YAML or TOML) with errors that name the file, the key and the expected form."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.durations import parse_duration as _parse_duration

class ConfigError(ValueError):
    """A configuration file is wrong; the message names the file, the key and the expected form."""


def parse_duration(value: float | int | str) -> float:
    """A duration in the one grammar (``schemas.durations``: ``30s``, ``1h30m``, ``1w``, seconds) -> seconds."""
    return _parse_duration(value)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.I)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(value: float | int | str) -> int:
    """``"8GiB"``, ``"500MB"``, ``"1TB"`` or a number of bytes -> bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"size {value!r} must be > 0 bytes")
        return int(value)
    m = _SIZE_RE.match(str(value))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"size {value!r} is invalid; expected e.g. 500MB, 8GiB, 1TB or a number of bytes")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "B").upper()])


def read_config_file(path: str | Path, what: str = "config") -> Any:
    """The parsed content of a ``.toml`` file, or of YAML otherwise (None for an empty file)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what} file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: {what} file is not UTF-8 text: {exc}") from None
    try:
        return tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'YAML'}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: {what} file is nested too deeply") from None


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: ``file: key.path: what is wrong (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg} (got {err.get('input')!r})")
    return "\n".join(lines)
