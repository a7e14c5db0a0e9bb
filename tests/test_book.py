"""Every catalogued book figure is recomputed by the engine on each run.

A reproduced figure that drifts beyond its rel_tol fails; an erratum whose
engine value changes (beyond 1e-6 relative) fails; an erratum that starts
matching the book fails (it must be re-classified).
"""
import pytest

from costmodel import book

ENTRIES = book.load_catalogue()


def test_catalogue_is_large_and_ids_unique():
    assert len({e.id for e in ENTRIES}) == len(ENTRIES)
    assert len(ENTRIES) >= 10


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.id for e in ENTRIES])
def test_book_entry(entry):
    r = book.check(entry)
    assert r.ok, f"{entry.id} (line {entry.line}): {r.message}"


def test_errata_have_cause_and_engine_value():
    for e in ENTRIES:
        if e.verdict == "erratum":
            assert e.cause and e.engine_value is not None, e.id


def test_evaluator_rejects_unsafe_expressions():
    from costmodel.errors import CostModelError
    for bad in ("__import__('os')", "().__class__", "open('x')", "estimate.__globals__", "2**100000"):
        with pytest.raises((CostModelError, SyntaxError)):
            book.evaluate(bad)
