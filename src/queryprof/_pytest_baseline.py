"""The baseline ratchet: each test's statement count (and shapes) in a readable JSON file.

::

    {
      "queryprof_baseline": 1,
      "tests": {
        "tests/test_api.py::test_list_authors": {
          "queries": 2,
          "shapes": {"SELECT blog_authors.id, ... FROM blog_authors ORDER BY ...": 1, ...}
        }
      }
    }

Workers only read it; the process that runs the session (the xdist controller) merges the
results of every test that passed and writes it once, at the end.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1


class BaselineError(ValueError):
    """The baseline file exists but is not one queryprof wrote."""


@dataclass(frozen=True, slots=True)
class Entry:
    queries: int
    shapes: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"queries": self.queries}
        if self.shapes:
            data["shapes"] = dict(sorted(self.shapes.items(), key=lambda kv: (-kv[1], kv[0])))
        return data


def load(path: Path) -> dict[str, Entry]:
    """The entries of the file, by test node id; none when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        if data.get("queryprof_baseline") != VERSION:
            raise ValueError(f"'queryprof_baseline' is not {VERSION}")
        return {
            nodeid: Entry(int(entry["queries"]), dict(entry.get("shapes", {})))
            for nodeid, entry in data["tests"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BaselineError(f"{path} is not a queryprof baseline file: {exc}") from None


def dump(path: Path, entries: dict[str, Entry]) -> None:
    """Write the file whole (a temporary file renamed over it: never half written)."""
    data = {
        "queryprof_baseline": VERSION,
        "tests": {nodeid: entries[nodeid].as_json() for nodeid in sorted(entries)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def grown(before: Entry, queries: int, shapes: dict[str, int]) -> list[str]:
    """The shapes that run more often than the baseline says: ``"+2 x SELECT ... (1 -> 3)"``."""
    lines = []
    for sql, count in sorted(shapes.items(), key=lambda kv: -kv[1]):
        old = before.shapes.get(sql, 0)
        if count > old:
            lines.append(f"+{count - old} x {sql} ({old} -> {count})")
    return lines


@dataclass
class Outcome:
    """What a run changes in the baseline; ``entries`` is what the file should hold."""

    entries: dict[str, Entry]
    added: list[str] = field(default_factory=list)
    fewer: list[tuple[str, int, int]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def write(self) -> bool:
        return bool(self.added or self.changed)


def merge(before: dict[str, Entry], ran: dict[str, Entry], *, update: bool) -> Outcome:
    """Tests new to the baseline are added; with ``update`` every test that ran is rewritten.

    Entries of tests that did not run (deselected, failed, in other files) are kept.
    """
    outcome = Outcome(dict(before))
    for nodeid, entry in sorted(ran.items()):
        old = before.get(nodeid)
        if old is None:
            outcome.added.append(nodeid)
            outcome.entries[nodeid] = entry
            continue
        if entry.queries < old.queries:
            outcome.fewer.append((nodeid, old.queries, entry.queries))
        if update and entry != old:
            outcome.changed.append(nodeid)
            outcome.entries[nodeid] = entry
    return outcome
