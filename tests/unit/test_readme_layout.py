"""The README's layout table names paths that exist (it drifted from the code before)."""

import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AREAS = ("data", "labeling", "evaluation", "training", "delivery")


def _expand(path: str) -> list[str]:
    """`components/{a,b}.py` and `components/<area>/x.py` into the concrete paths they stand for."""
    paths = [path]
    if "<area>" in path:
        paths = [p.replace("<area>", area) for p in paths for area in AREAS]
    out = []
    for p in paths:
        match = re.search(r"\{([^}]*)\}", p)
        out += [p[:match.start()] + alt + p[match.end():] for alt in match.group(1).split(",")] if match else [p]
    return out


def test_every_path_in_the_layout_table_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    named = list(itertools.chain.from_iterable(re.findall(r"`([^`]+)`", cell) for cell in cells))
    assert len(named) > 15
    missing = [p for name in named for p in _expand(name) if not (ROOT / p).exists()]
    assert missing == [], f"README layout names paths that do not exist: {missing}"
