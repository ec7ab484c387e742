"""The demo project: a small shop's upload files, generated, plus a ready-made project folder.

Tests, benchmarks and new users all start from the same data, so the generator is seeded and
deterministic (same ``rows`` and ``seed`` -> byte-identical files) and scales from a few hundred
rows (a test) to millions (a benchmark) in pure Python: no NumPy, no network.

Layout: one Dango csv source per table (``.dango/sources.yml``), each with its own folder, so a
file dropped in later simply adds rows to that table (``raw_orders.orders``)::

    <uploads>/customers/customers_0001.csv
    <uploads>/orders/orders_0001.csv
    <uploads>/payments/payments_0001.csv

Headers are snake_case, so the dbt staging models can name them directly.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import random
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from dango_dagster.config import load_config, shipped_file
from dango_dagster.errors import DemoProjectError

# Each table is a csv source of its own (Dango loads one table per file source).
TABLES = ("customers", "orders", "payments")
# Dango's files and ours that make the demo a project folder (copied by `demo init`).
PROJECT_FILES = ("project.yml", "sources.yml", "schedules.yml", "dango_dagster.yml")
ORDER_STATUSES = ("placed", "shipped", "completed", "returned", "cancelled")
PAYMENT_METHODS = ("credit_card", "bank_transfer", "gift_card", "coupon")

# Fixed calendar (never "today"), so the same seed gives the same bytes on any day.
_LAST_DAY = dt.date(2025, 6, 30)
_STATUS_WEIGHTS = (7, 10, 70, 5, 8)
_METHOD_WEIGHTS = (60, 25, 10, 5)
_FIRST_NAMES = (
    "ana", "ben", "chloe", "dmitri", "emma", "farid", "grace", "hiro", "ines", "jonas",
    "kofi", "lena", "mateo", "nora", "omar", "priya", "quinn", "rosa", "sven", "tara",
)  # fmt: skip
_LAST_NAMES = (
    "alvarez", "brown", "chen", "dubois", "eriksen", "fischer", "garcia", "haddad", "ito",
    "jensen", "kowalski", "lopez", "muller", "nakamura", "okafor", "patel", "rossi", "smith",
)  # fmt: skip
_COUNTRIES = ("DE", "FR", "NL", "ES", "IT", "GB", "US", "JP", "BR", "IN")

# dbt build output of the repository's dbt project is not part of the template.
_DBT_SKIP = shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml", "__pycache__")
_DEMO_GITIGNORE = """\
# generated data and runtime state; the config and the dbt project are what you keep
data/
.dango/*
!.dango/project.yml
!.dango/sources.yml
!.dango/schedules.yml
!.dango/dango_dagster.yml
dbt_project/target/
dbt_project/logs/
dbt_project/dbt_packages/
dbt_project/.user.yml
"""


def table_sizes(rows: int) -> dict[str, int]:
    """How many customers and orders ``rows`` means (payments follow from the orders)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    return {"customers": max(10, rows // 5), "orders": rows}


def _day_count(rows: int) -> int:
    # About four orders a day, between a month and two years: fct_daily_sales gets many rows.
    return min(730, max(30, rows // 4))


def _cents(value: int) -> str:
    return f"{value // 100}.{value % 100:02d}"


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write beside the final name, then rename: a watching sensor never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def generate_demo_data(uploads_dir: Path, rows: int = 500, seed: int = 42) -> dict[str, int]:
    """Write the shop's CSV files under ``uploads_dir / <table>``; return rows per table.

    ``rows`` is the number of orders; customers are a fifth of that (at least 10) and payments
    about 1.05 per order (cancelled orders have none, some orders are split in two payments).
    Only the ``<table>_0001.csv`` files are (re)written; other files in the folders are kept.
    """
    sizes = table_sizes(rows)
    n_customers, n_orders = sizes["customers"], sizes["orders"]
    rng = random.Random(seed)
    shop = Path(uploads_dir)
    days = _day_count(rows)
    first_day = _LAST_DAY - dt.timedelta(days=days - 1)
    day_names = [(first_day + dt.timedelta(days=d)).isoformat() for d in range(days)]
    signup_names = [(first_day - dt.timedelta(days=d)).isoformat() for d in range(1, 366)]

    first = rng.choices(_FIRST_NAMES, k=n_customers)
    last = rng.choices(_LAST_NAMES, k=n_customers)
    countries = rng.choices(_COUNTRIES, k=n_customers)
    signups = rng.choices(signup_names, k=n_customers)
    _write_csv(
        shop / "customers" / "customers_0001.csv",
        ("customer_id", "first_name", "last_name", "email", "country", "signup_date"),
        (
            (i + 1, first[i], last[i], f"{first[i]}.{last[i]}{i + 1}@example.com",
             countries[i], signups[i])
            for i in range(n_customers)
        ),
    )  # fmt: skip

    # Orders in date order, so order ids grow with time like a real shop's.
    order_days = sorted(rng.choices(range(days), k=n_orders))
    customer_ids = [int(rng.random() * n_customers) + 1 for _ in range(n_orders)]
    statuses = rng.choices(ORDER_STATUSES, weights=_STATUS_WEIGHTS, k=n_orders)
    totals = [500 + int(rng.random() * 29_500) for _ in range(n_orders)]  # 5.00 .. 299.99
    _write_csv(
        shop / "orders" / "orders_0001.csv",
        ("order_id", "customer_id", "order_date", "status"),
        ((i + 1, customer_ids[i], day_names[order_days[i]], statuses[i]) for i in range(n_orders)),
    )

    methods = rng.choices(PAYMENT_METHODS, weights=_METHOD_WEIGHTS, k=n_orders)
    splits = [rng.random() < 0.15 for _ in range(n_orders)]
    payments: list[tuple[int, int, str, str]] = []
    append = payments.append
    for i in range(n_orders):
        if statuses[i] == "cancelled":
            continue
        total = totals[i]
        if splits[i]:
            # A gift card covers part of it, the chosen method the rest (both at least 1.00).
            part = 100 + (total - 200) * (i % 7 + 1) // 8
            append((len(payments) + 1, i + 1, "gift_card", _cents(part)))
            total -= part
        append((len(payments) + 1, i + 1, methods[i], _cents(total)))
    _write_csv(
        shop / "payments" / "payments_0001.csv",
        ("payment_id", "order_id", "payment_method", "amount"),
        payments,
    )
    return {"customers": n_customers, "orders": n_orders, "payments": len(payments)}


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise DemoProjectError(f"{target} exists and is not a folder; choose another path.")
    if target.is_dir() and any(target.iterdir()):
        raise DemoProjectError(
            f"{target} is not empty; nothing was changed. Choose a new or empty folder "
            "(the demo never writes over existing files)."
        )


def init_demo_project(target: Path, rows: int = 500, seed: int = 42) -> Path:
    """Create a complete demo project folder at ``target``; return its absolute path.

    It holds Dango's ``.dango/project.yml``, ``sources.yml`` and ``schedules.yml`` and our
    ``.dango/dango_dagster.yml`` (copies of this repository's), ``.dango/state/``, the dbt project,
    and generated upload files. The folder is built under a temporary name beside
    ``target`` and renamed into place at the end, so a failure (disk full, Ctrl-C) never leaves a
    half-made project, and an existing non-empty folder is refused before anything is written.
    """
    target = Path(target).expanduser().resolve()
    _check_target(target)
    table_sizes(rows)  # a bad size fails before anything is written
    # Templates from the repository (the package is installed editable): one source of truth.
    config_srcs = [shipped_file(".dango", name) for name in PROJECT_FILES]
    dbt_src = shipped_file("dbt_project")
    target.parent.mkdir(parents=True, exist_ok=True)
    # A plain mkdir (not mkdtemp's 0700) so the project gets the user's usual permissions.
    staging = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        (staging / ".dango").mkdir(parents=True)
        for src in config_srcs:
            shutil.copyfile(src, staging / ".dango" / src.name)
        shutil.copytree(dbt_src, staging / "dbt_project", ignore=_DBT_SKIP)
        (staging / ".gitignore").write_text(_DEMO_GITIGNORE, encoding="utf-8")
        config = load_config(staging)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        generate_demo_data(config.uploads_dir, rows=rows, seed=seed)
        _check_target(target)  # still free? (someone may have written there meanwhile)
        if target.is_dir():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
