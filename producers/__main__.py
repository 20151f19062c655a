"""``python -m producers``: the lean producer sidecar (what ``swarmwatch produce`` exec's into)."""
from __future__ import annotations

from producers.sidecar import main

raise SystemExit(main())
