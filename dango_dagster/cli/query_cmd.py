"""``dango-dagster query "SQL"``: the seed's remote query, through the audited, keyed API.

The key comes from ``--key`` or ``DANGO_API_KEY``, the server from ``--url`` or ``DANGO_API_URL``
(default http://127.0.0.1:8800). Output is a readable table by default, or JSON / CSV for
scripts. Every failure prints the server's reason and what to do, and exits 3.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from dango_dagster.cli.errors import EXIT_OK

_MAX_CELL = 60


def register(subparsers: argparse._SubParsersAction) -> None:
    query = subparsers.add_parser("query", help="run read-only SQL through the query API")
    query.add_argument("sql", help="one SELECT statement (quote it)")
    query.add_argument(
        "--url",
        default=None,
        help="API base URL (default $DANGO_API_URL, then http://127.0.0.1:8800)",
    )
    query.add_argument("--key", default=None, help="API key (default $DANGO_API_KEY)")
    query.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="query timeout in seconds (the server caps it at api.query_timeout_seconds)",
    )
    query.add_argument("--max-rows", type=int, default=None, metavar="N", help="fewer rows")
    query.add_argument("--format", choices=["table", "json", "csv"], default="table")
    query.set_defaults(handler=_query)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def format_table(result: dict[str, Any]) -> str:
    columns: list[str] = result.get("columns", [])
    rows = [[_cell(v) for v in row] for row in result.get("rows", [])]
    numeric = [
        all(isinstance(row[i], int | float) for row in result.get("rows", []) if row[i] is not None)
        for i in range(len(columns))
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return " | ".join(parts).rstrip()

    out = [line(columns), "-+-".join("-" * w for w in widths)] if columns else []
    out += [line(r) for r in rows]
    count = result.get("row_count", len(rows))
    footer = f"({count} row{'s' if count != 1 else ''}"
    if result.get("truncated"):
        footer += f", truncated at {result.get('max_rows')}: add a LIMIT or aggregate"
    footer += f"; snapshot {result.get('snapshot_at')}; {result.get('elapsed_ms', 0):.0f} ms)"
    out.append(footer)
    return "\n".join(out)


def _query(args: argparse.Namespace) -> int:
    from dango_dagster.api.client import run_query

    result = run_query(
        args.sql, url=args.url, key=args.key, timeout=args.timeout, max_rows=args.max_rows
    )
    if args.format == "json":
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result["columns"])
        for row in result["rows"]:
            writer.writerow(
                ["" if v is None else v if isinstance(v, str) else json.dumps(v) for v in row]
            )
        if result.get("truncated"):
            print(f"warning: truncated at {result.get('max_rows')} rows", file=sys.stderr)
    else:
        print(format_table(result))
    return EXIT_OK
