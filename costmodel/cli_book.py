"""`costmodel book`: the book's figures, reproduced or recorded as errata."""
from __future__ import annotations

import json

import click

from .cli import console, guarded, main, write_output
from .errors import CostModelError, suggest


@main.command()
@click.option("--errata", is_flag=True, help="list the errata with line numbers")
@click.option("--measured", is_flag=True, help="list the claimed measurements (GPU validation list)")
@click.option("--check", "check_id", metavar="ID", help="work one entry out step by step")
@click.option("--chapter", type=int, help="only this chapter")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False))
@guarded
def book(errata, measured, check_id, chapter, fmt, output):
    """Scorecard of the book's figures: reproduced / errata / measured."""
    from . import book as bk
    entries = list(bk.load_catalogue())
    if chapter is not None:
        entries = [e for e in entries if e.chapter == chapter]
    if check_id:
        ids = {e.id: e for e in entries}
        if check_id not in ids:
            raise CostModelError(f"unknown book entry {check_id!r}{suggest(check_id, ids)}")
        e = ids[check_id]
        if fmt == "json":
            r = bk.check(e)
            write_output(json.dumps(_row(e, r), indent=2), output)
            return
        from rich.console import Console
        from rich.table import Table
        t = Table(title=f"{e.id}", show_header=False, title_justify="left")
        t.add_column(style="bold")
        t.add_column(overflow="fold")
        for k, v in bk.explain_entry(e):
            t.add_row(k, v)
        console().print(t)
        return
    results = [bk.check(e) for e in entries]
    if fmt == "json":
        rows = [_row(r.entry, r) for r in results
                if (not errata or r.entry.verdict == "erratum") and (not measured or r.entry.verdict == "measured")]
        write_output(json.dumps(rows, indent=2), output)
        return
    from rich.console import Console
    from rich.table import Table
    con = console()
    if errata or measured:
        want = "erratum" if errata else "measured"
        t = Table(title=f"book {'errata' if errata else 'measured claims'}", title_justify="left")
        cols = ("id", "line", "§", "quantity", "book", "engine", "cause") if errata else ("id", "line", "§", "quantity", "book")
        for c in cols:
            t.add_column(c, overflow="fold")
        for r in results:
            e = r.entry
            if e.verdict != want:
                continue
            row = [e.id, str(e.line), e.section, e.quantity, _fmt(e.book_value, e.unit)]
            if errata:
                row += [_fmt(r.value, e.unit), e.cause or ""]
            t.add_row(*row)
        con.print(t)
        return
    t = Table(title="the book, figure by figure", title_justify="left")
    for c in ("chapter", "figures", "reproduced", "errata", "measured", "failing"):
        t.add_column(c, justify="right")
    fails = {}
    for r in results:
        if not r.ok:
            fails[r.entry.chapter] = fails.get(r.entry.chapter, 0) + 1
    tot = {"reproduced": 0, "erratum": 0, "measured": 0}
    for row in bk.scorecard(entries):
        n = row["reproduced"] + row["erratum"] + row["measured"]
        for k in tot:
            tot[k] += row[k]
        t.add_row(str(row["chapter"]), str(n), str(row["reproduced"]), str(row["erratum"]), str(row["measured"]),
                  str(fails.get(row["chapter"], 0)))
    t.add_row("all", str(sum(tot.values())), str(tot["reproduced"]), str(tot["erratum"]), str(tot["measured"]),
              str(sum(fails.values())), style="bold")
    con.print(t)


def _fmt(v, unit):
    return "-" if v is None else f"{v:.4g} {unit}"


def _row(e, r):
    return {"id": e.id, "line": e.line, "section": e.section, "chapter": e.chapter, "quantity": e.quantity,
            "unit": e.unit, "verdict": e.verdict, "book_value": e.book_value, "engine_value": r.value,
            "recorded_engine_value": e.engine_value, "cause": e.cause, "expr": e.expr, "ok": r.ok,
            "check": r.message}
