"""The benchmarks' modules import each other as scripts do (``from _common import ...``):
their folder goes on the path, as when ``python bench/<name>.py`` runs."""

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
