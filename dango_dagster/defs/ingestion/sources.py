"""Ingestion sources: what dlt loads into the warehouse schema ``raw_<source>``.

Two kinds of source, set per source in ``.dango/project.yml``:

- ``type: files``: a folder (default ``data/uploads/<name>``) of ``<table>.<ext>`` files and/or
  ``<table>/`` sub-folders of files, ``<ext>`` per ``format`` (csv, parquet or jsonl). Each table
  is one dlt resource with ``write_disposition="replace"``: every load re-reads *all* files of the
  table, so a file dropped in later shows up and nothing is ever counted twice. The files are
  read by an in-memory DuckDB (its CSV sniffer types the columns, reading the whole file so a late
  odd value cannot break a load half-way) and handed to dlt as Arrow batches: no Python object
  per row, so a million rows take seconds, not many minutes. Each row carries ``_dango_file``,
  the file it came from (relative to the source folder).
- ``type: dlt``: ``ref: package.module:function`` is imported and called with ``kwargs``; it must
  return a dlt source or resource (any dlt verified source fits).

Holding the warehouse lock only while writing
---------------------------------------------
A dlt run has three steps and only the last opens the DuckDB file::

    pipeline = build_pipeline(config, source)   # opens nothing
    pipeline.extract(build_dlt_source(config, source))  # reads files/APIs -> load package on disk
    pipeline.normalize()                        # rewrites the package for DuckDB, still on disk
    with lock:                                  # DbtLock / the Dagster gate
        pipeline.load()                         # the only step that opens the warehouse file

The load packages live under ``.dango/state/dlt/<pipeline>/`` (never the user's home folder), so
extract and normalize may run while another process holds the lock and writes the warehouse
(tests/test_sources.py checks exactly that with the file held open by another process). Do not
use ``pipeline.run()`` under a gate: it also syncs state with the destination before extracting.

dlt's anonymous telemetry is switched off when this module is imported, and nothing here needs
the network (a ``type: dlt`` source may, by its nature).
"""

from __future__ import annotations

import os

# Before dlt reads its runtime configuration: no telemetry, ever (dlt reads env vars lazily, but
# setting it first also covers anything that resolves config at import time).
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"

import importlib  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import dlt  # noqa: E402
from dlt.common.normalizers.naming.snake_case import NamingConvention  # noqa: E402
from dlt.extract.resource import DltResource  # noqa: E402
from dlt.extract.source import DltSource  # noqa: E402

from dango_dagster.config import ProjectConfig, SourceSettings  # noqa: E402
from dango_dagster.errors import SourceError  # noqa: E402

__all__ = [
    "FILE_COLUMN",
    "SourceError",
    "build_dlt_source",
    "build_pipeline",
    "source_tables",
    "table_files",
]

FILE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "csv": (".csv",),
    "parquet": (".parquet",),
    "jsonl": (".jsonl", ".ndjson"),
}
FILE_COLUMN = "_dango_file"
BATCH_ROWS = 100_000
_NAMING = NamingConvention()


# -- files sources ------------------------------------------------------------------------------
def _visible(path: Path) -> bool:
    # Hidden and underscore names are temp files of writers (ours write ``.name.tmp``) or metadata.
    return not path.name.startswith((".", "_"))


def table_files(folder: Path, file_format: str) -> dict[str, list[Path]]:
    """``{table: [files]}`` found in ``folder``: ``<table>.<ext>`` files and ``<table>/`` folders.

    Table names are normalized the way dlt names tables (``Order Items.csv`` -> ``order_items``),
    so the resource name, the warehouse table and the Dagster asset key agree. A file and a folder
    of the same table are merged; empty files and folders without files are skipped.
    """
    exts = FILE_EXTENSIONS[file_format]
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    for entry in sorted(folder.iterdir()):
        if not _visible(entry):
            continue
        if entry.is_dir():
            name = entry.name
            files = [
                p
                for p in sorted(entry.rglob("*"))
                if p.suffix.lower() in exts
                and p.is_file()
                and all(_visible(Path(part)) for part in p.relative_to(entry).parts)
            ]
        elif entry.suffix.lower() in exts and entry.is_file():
            name, files = entry.stem, [entry]
        else:
            continue
        files = [p for p in files if p.stat().st_size > 0]
        if files:
            found.setdefault(_NAMING.normalize_table_identifier(name), []).extend(files)
    return {table: sorted(files) for table, files in sorted(found.items())}


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _reader_sql(files: Sequence[Path], file_format: str) -> str:
    paths = "[" + ", ".join(_sql_text(str(p)) for p in files) + "]"
    common = f"union_by_name = true, filename = {_sql_text(FILE_COLUMN)}"
    if file_format == "csv":
        # sample_size=-1: type columns from the whole file, not the first 20k rows.
        return f"read_csv({paths}, header = true, sample_size = -1, {common})"
    if file_format == "jsonl":
        return f"read_json({paths}, format = 'newline_delimited', sample_size = -1, {common})"
    return f"read_parquet({paths}, {common})"


def read_table_batches(folder: Path, files: Sequence[Path], file_format: str) -> Iterator[Any]:
    """Arrow batches of all ``files`` of one table; ``_dango_file`` is relative to ``folder``."""
    import duckdb

    start = len(str(folder)) + 2  # SQL substr is 1-based; skip the folder and the separator
    sql = (
        f"SELECT * REPLACE (substr({FILE_COLUMN}, {start}) AS {FILE_COLUMN}) "
        f"FROM {_reader_sql(files, file_format)}"
    )
    con = duckdb.connect(":memory:")
    try:
        for batch in con.sql(sql).to_arrow_reader(BATCH_ROWS):
            if batch.num_rows:
                yield batch
    except duckdb.Error as exc:
        raise SourceError(_read_error(files, exc)) from exc
    finally:
        con.close()


def _read_error(files: Sequence[Path], exc: Exception) -> str:
    shown = ", ".join(str(p) for p in files[:3]) + (" ..." if len(files) > 3 else "")
    return f"Could not read {shown}: {exc}\nFix or remove the file, then load again."


def _file_resource(folder: Path, table: str, file_format: str) -> DltResource:
    def read() -> Iterator[Any]:
        # Listed again at run time: files added after the definitions loaded are included.
        files = table_files(folder, file_format).get(table)
        if not files:
            raise SourceError(
                f"Table {table!r} has no {file_format} files in {folder} any more "
                f"(expected {table}.{file_format} or {table}/*.{file_format})."
            )
        yield from read_table_batches(folder, files, file_format)

    return dlt.resource(read, name=table, write_disposition="replace")


def _files_tables(config: ProjectConfig, source: SourceSettings) -> list[str]:
    """Declared tables (``tables:`` in project.yml) plus those found on disk."""
    found = table_files(config.source_path(source), source.format)
    return sorted(set(source.tables) | set(found))


def _files_source(config: ProjectConfig, source: SourceSettings) -> DltSource:
    folder = config.source_path(source)
    resources = [
        _file_resource(folder, table, source.format) for table in _files_tables(config, source)
    ]
    return DltSource(dlt.Schema(source.name), source.name, resources)


# -- dlt sources (by import path) ---------------------------------------------------------------
def _import_ref(source: SourceSettings) -> Callable[..., Any]:
    assert source.ref is not None
    module_name, attr = source.ref.split(":")
    where = f"source {source.name!r}: ref {source.ref!r}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise SourceError(
                f"{where}: module {module_name!r} not found. Install the package that provides "
                "it into this environment, or correct the module path (package.module:function)."
            ) from exc
        raise SourceError(
            f"{where}: importing {module_name!r} failed because {exc.name!r} is missing; "
            "install it into this environment."
        ) from exc
    except Exception as exc:
        raise SourceError(f"{where}: importing {module_name!r} failed: {exc!r}") from exc
    func = getattr(module, attr, None)
    if func is None:
        public = sorted(n for n in dir(module) if not n.startswith("_"))
        raise SourceError(
            f"{where}: module {module_name!r} has no attribute {attr!r} "
            f"(it has: {', '.join(public[:20]) or 'nothing public'})."
        )
    if not callable(func):
        raise SourceError(
            f"{where}: {attr!r} is a {type(func).__name__}, not a function. Point ref at a "
            "function decorated with @dlt.source or @dlt.resource."
        )
    return func


def _ref_source(source: SourceSettings) -> DltSource:
    func = _import_ref(source)
    where = f"source {source.name!r}: ref {source.ref!r}"
    try:
        result = func(**source.kwargs)
    except TypeError as exc:
        raise SourceError(
            f"{where}: calling it with kwargs {sorted(source.kwargs)} failed: {exc}. "
            "Fix `kwargs:` in .dango/project.yml to match the function's parameters."
        ) from exc
    if isinstance(result, DltSource):
        return result if result.name == source.name else result.clone(with_name=source.name)
    items = result if isinstance(result, list | tuple) else [result]
    if items and all(isinstance(item, DltResource) for item in items):
        return DltSource(dlt.Schema(source.name), source.name, list(items))
    raise SourceError(
        f"{where}: returned {type(result).__name__}, not a dlt source or resource. Decorate the "
        "function with @dlt.source (returning resources) or @dlt.resource."
    )


# -- public API ---------------------------------------------------------------------------------
def build_dlt_source(config: ProjectConfig, source: SourceSettings) -> DltSource:
    """The dlt source of one configured source, named after it, one resource per table.

    Cheap and lazy: nothing is read until dlt extracts, and files are listed again then.
    """
    if source.type == "files":
        return _files_source(config, source)
    if not source.ref:
        raise SourceError(
            f"source {source.name!r} has type 'dlt' but no ref; add "
            "`ref: package.module:function` in .dango/project.yml."
        )
    return _ref_source(source)


def source_tables(config: ProjectConfig, source: SourceSettings) -> list[str]:
    """Table names of a source without loading anything (files: from the folder listing)."""
    if source.type == "files":
        return _files_tables(config, source)
    return list(build_dlt_source(config, source).selected_resources.keys())


def build_pipeline(
    config: ProjectConfig, source: SourceSettings, *, pipelines_dir: Path | None = None
) -> dlt.Pipeline:
    """The dlt pipeline ``dango_<name>`` loading into ``raw_<name>`` of the project warehouse.

    Its working folder (load packages, pipeline state) is ``.dango/state/dlt`` unless
    ``pipelines_dir`` says otherwise; creating it opens nothing, see the module docstring.
    """
    # dlt's DuckDB destination does not create the warehouse's folder (``data/``) itself.
    config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=f"dango_{source.name}",
        destination=dlt.destinations.duckdb(str(config.warehouse_path)),
        dataset_name=source.schema_name,
        pipelines_dir=str(pipelines_dir or config.state_dir / "dlt"),
    )
