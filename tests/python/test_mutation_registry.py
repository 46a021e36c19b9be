"""The seeded faults of tests/mutation/mutants.py stay applicable: run.py skips a mutant whose text
is gone as STALE, which only a mutation run (not CI) would show, so the registry is checked here:
each mutant's text occurs exactly once in its file, changes it, and has an id of its own."""

from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "mutation"))

import mutants  # noqa: E402


def _registry():
    return [m for v in vars(mutants).values() if isinstance(v, list)
            for m in v if isinstance(m, mutants.Mutant)]


def test_every_mutant_applies_once():
    found = _registry()
    assert len(found) > 100
    stale = []
    for m in found:
        with open(os.path.join(ROOT, m.file)) as f:
            count = f.read().count(m.old)
        if count != 1 or m.new == m.old:
            stale.append(f"{m.id} ({m.file}: its text occurs {count} times)")
    assert not stale, stale


def test_mutant_ids_are_unique():
    ids = [m.id for m in _registry()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
