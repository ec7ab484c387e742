"""dlt sources from ``.dango/sources.yml``, built from Dango's keys the way Dango builds them.

- ``rest_api``: dlt's ``rest_api_source`` with Dango's flat keys (``base_url``, ``endpoints``,
  ``auth_type``, ``auth_token_env``, ``api_key_name``, ``headers`` ...) turned into dlt's
  ``client``/``resources`` config exactly as Dango's ``_build_rest_api_config`` does.
- ``filesystem``: dlt's ``filesystem`` source (``bucket_url``, ``file_glob``), each file read by
  DuckDB's reader for its extension (Dango's file readers); ``table_name`` names the table.
- ``sql_database`` / ``postgres`` / ``mysql``: dlt's ``sql_database`` source.
- ``dlt_native``: ``source_module`` / ``source_function`` / ``function_kwargs``, imported from the
  project's ``custom_sources/`` or as ``dlt.sources.<module>``.
- Dango's verified sources (stripe, hubspot, google_sheets, ...): the source function of the dlt
  package getdango vendors, found through getdango's own registry; without getdango installed a
  clear message says what to install.

Settings ending in ``_env`` name an environment variable, resolved as Dango resolves them.
Credentials come from where Dango keeps them (see :mod:`.credentials`). Each source loads into
``raw_<name>``; the dlt pipeline is named after the source (as Dango names it), and its working
folder is dango-dagster's own (``.dango/state/dango_dagster/dlt``), so extract and normalize run
outside the warehouse lock and only ``pipeline.load()`` opens the warehouse (see ``assets.py``).
"""

from __future__ import annotations

import os

# Before dlt reads its runtime configuration: no telemetry, ever.
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"

import importlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, cast  # noqa: E402

import dlt  # noqa: E402
from dlt.extract.resource import DltResource  # noqa: E402
from dlt.extract.source import DltSource  # noqa: E402

from dango_dagster.config import ProjectConfig  # noqa: E402
from dango_dagster.dango_project import DangoSource  # noqa: E402
from dango_dagster.defs.ingestion.credentials import load_credentials  # noqa: E402
from dango_dagster.errors import SourceError  # noqa: E402

__all__ = ["SourceError", "build_dlt_source", "build_pipeline", "source_tables"]

_DANGO_ONLY = {"deduplication", "enabled", "description", "lookback_days"}
_SQL_TYPES = ("sql_database", "postgres", "mysql")


def resolve_env_keys(settings: dict[str, Any]) -> dict[str, Any]:
    """Dango's rule: ``foo_env: VAR`` becomes ``foo=$VAR`` when VAR is set; when it is not, the
    key is dropped so dlt resolves the value from its own secrets."""
    resolved: dict[str, Any] = {}
    for key, value in settings.items():
        if key in _DANGO_ONLY:
            continue
        if key.endswith("_env") and isinstance(value, str):
            env_value = os.getenv(value)
            if env_value is not None:
                resolved[key[:-4]] = env_value
        else:
            resolved[key] = value
    return resolved


def _paginator(pag: Any) -> Any:
    kind = pag.get("type", "auto") if isinstance(pag, dict) else pag
    if kind == "none":
        return "single_page"
    if kind == "header_link":
        return "header_link"
    known = {"page_number": "page_param", "cursor": "cursor_path", "offset": "limit"}
    if kind in known:
        out: dict[str, Any] = {"type": kind}
        key = known[kind]
        if isinstance(pag, dict) and pag.get(key):
            out[key] = int(pag[key]) if key == "limit" else pag[key]
        return out
    return None  # auto: dlt detects it


def rest_api_config(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Dango's flat rest_api keys -> dlt's RESTAPIConfig (port of Dango's own mapping)."""
    client: dict[str, Any] = {"base_url": kwargs.get("base_url", "")}
    headers = kwargs.get("headers") or {}
    if headers:
        client["headers"] = {
            k: (os.getenv(m.group(1), v) if (m := re.fullmatch(r"\$\{(\w+)\}", v)) else v)
            for k, v in headers.items()
        }
    auth, token = kwargs.get("auth_type"), kwargs.get("auth_token")
    if auth == "bearer" and token:
        client["auth"] = {"type": "bearer", "token": token}
    elif auth == "api_key" and token:
        client["auth"] = {
            "type": "api_key",
            "name": kwargs.get("api_key_name") or "Authorization",
            "api_key": token,
            "location": kwargs.get("api_key_location") or "header",
        }
    elif auth == "basic" and kwargs.get("basic_username"):
        client["auth"] = {
            "type": "http_basic",
            "username": kwargs["basic_username"],
            "password": kwargs.get("basic_password") or "",
        }
    elif auth == "oauth2_client_credentials" and kwargs.get("access_token_url"):
        client["auth"] = {
            "type": "oauth2_client_credentials",
            "access_token_url": kwargs["access_token_url"],
            "client_id": kwargs.get("client_id") or "",
            "client_secret": kwargs.get("client_secret") or "",
        }
    elif auth == "custom_header" and token:
        client.setdefault("headers", {})[kwargs.get("auth_header_name") or "Authorization"] = token
    resources: list[Any] = []
    for ep in kwargs.get("endpoints") or []:
        if isinstance(ep, str):
            ep = {"path": ep, "name": ep}
        if "endpoint" in ep or "path" not in ep:
            resources.append({"write_disposition": "merge", "primary_key": "id", **ep})
            continue
        endpoint: dict[str, Any] = {"path": ep["path"]}
        for key in ("data_selector", "params"):
            if ep.get(key):
                endpoint[key] = ep[key]
        if ep.get("paginator") and (pag := _paginator(ep["paginator"])) is not None:
            endpoint["paginator"] = pag
        resources.append(
            {
                "name": ep.get("name", ep["path"].strip("/").replace("/", "_")),
                "endpoint": endpoint,
                "write_disposition": ep.get("write_disposition", "merge"),
                "primary_key": ep.get("primary_key", "id"),
            }
        )
    return {"client": client, "resources": resources}


@dlt.transformer(name="read_with_duckdb")
def _read_files(items: Any) -> Any:
    """Each file of a ``filesystem`` source, read by DuckDB's reader for its extension (the same
    readers Dango's file loader uses); no pandas, and the same on duckdb 1.5 and 2.0."""
    import tempfile

    import duckdb

    from dango_dagster.defs.ingestion.files_sql import READ_FUNCTIONS, sql_text

    for item in items:
        suffix = Path(item["file_name"]).suffix.lower()
        reader = READ_FUNCTIONS.get(suffix)
        if reader is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / f"file{suffix}"
            with item.open() as src, open(local, "wb") as dst:
                dst.write(src.read())
            con = duckdb.connect(":memory:")
            try:
                cur = con.execute(f"SELECT * FROM {reader}({sql_text(str(local))})")
                names = [d[0] for d in cur.description]
                while rows := cur.fetchmany(10_000):
                    yield [dict(zip(names, row, strict=True)) for row in rows]
            finally:
                con.close()


def _filesystem(kwargs: dict[str, Any]) -> Any:
    from dlt.sources.filesystem import filesystem

    files = filesystem(bucket_url=kwargs["bucket_url"], file_glob=kwargs.get("file_glob", "*"))
    return (files | _read_files).with_name(kwargs.get("table_name", "data"))


def _verified(source: DangoSource, kwargs: dict[str, Any]) -> Any:
    try:
        from dango.ingestion.sources.registry import get_source_metadata
    except ImportError as exc:
        raise SourceError(
            f"Source {source.name!r} has type {source.type!r}, one of Dango's verified sources, "
            "whose dlt code ships inside getdango. Install it into this environment "
            "(pip install getdango==1.0.13), then load again."
        ) from exc
    meta = get_source_metadata(source.type) or {}
    package, function = meta.get("dlt_package"), meta.get("dlt_function")
    if not package or not function:
        raise SourceError(
            f"Source {source.name!r}: type {source.type!r} is not in getdango's source registry; "
            "fix `type:` in .dango/sources.yml."
        )
    for module_path in (f"dango.ingestion.dlt_sources.{package}", f"dlt.sources.{package}"):
        try:
            module = importlib.import_module(module_path)
            break
        except ImportError:
            continue
    else:
        raise SourceError(f"Source {source.name!r}: cannot import dlt package {package!r}.")
    for key, value in (meta.get("default_config") or {}).items():
        kwargs.setdefault(key, value)
    return getattr(module, function)(**kwargs)


def _dlt_native(config: ProjectConfig, source: DangoSource) -> Any:
    native = source.dlt_native or {}
    module_name, function = native.get("source_module"), native.get("source_function")
    if not module_name or not function:
        raise SourceError(
            f"Source {source.name!r} (dlt_native) needs `source_module` and `source_function` "
            "under `dlt_native:` in .dango/sources.yml."
        )
    custom = str(config.root / "custom_sources")
    sys.path.insert(0, custom)
    try:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            try:
                module = importlib.import_module(f"dlt.sources.{module_name}")
            except ImportError:
                raise SourceError(
                    f"Source {source.name!r}: module {module_name!r} is neither in {custom} nor "
                    "an installed package. Put it in custom_sources/ or install it."
                ) from None
    finally:
        sys.path.remove(custom)
    func = getattr(module, function, None)
    if not callable(func):
        raise SourceError(f"Source {source.name!r}: {module_name!r} has no function {function!r}.")
    return func(**(native.get("function_kwargs") or {}))


def _as_source(source: DangoSource, result: Any) -> DltSource:
    if isinstance(result, DltSource):
        return result if result.name == source.name else result.clone(with_name=source.name)
    items = result if isinstance(result, list | tuple) else [result]
    if items and all(isinstance(item, DltResource) for item in items):
        return DltSource(dlt.Schema(source.name), source.name, list(items))
    raise SourceError(
        f"Source {source.name!r} returned {type(result).__name__}, not a dlt source or resource."
    )


def build_dlt_source(config: ProjectConfig, source: DangoSource) -> DltSource:
    """The dlt source of one non-file source of ``sources.yml``, named after it."""
    load_credentials(config)
    kwargs = resolve_env_keys(source.type_config())
    try:
        if source.type == "rest_api":
            from dlt.sources.rest_api import rest_api_source

            result: Any = rest_api_source(cast(Any, rest_api_config(kwargs)), name=source.name)
        elif source.type == "filesystem":
            result = _filesystem(kwargs)
        elif source.type in _SQL_TYPES:
            from dlt.sources.sql_database import sql_database

            result = sql_database(**kwargs)
        elif source.type == "dlt_native":
            result = _dlt_native(config, source)
        else:
            result = _verified(source, kwargs)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(
            f"Source {source.name!r} ({source.type}) could not be built: {exc}. Check its "
            "settings in .dango/sources.yml and its credentials (.env, .dlt/secrets.toml)."
        ) from exc
    return _as_source(source, result)


def source_tables(config: ProjectConfig, source: DangoSource) -> list[str]:
    """Table names of a source: ``[name]`` for a file source, else the dlt resources."""
    if source.is_files:
        return [source.name]
    return list(build_dlt_source(config, source).selected_resources.keys())


def pipelines_root(config: ProjectConfig) -> Path:
    """Where dlt keeps each pipeline's working folder (state, load packages)."""
    return config.own_state_dir / "dlt"


def build_pipeline(
    config: ProjectConfig, source: DangoSource, *, pipelines_dir: Path | None = None
) -> dlt.Pipeline:
    """The dlt pipeline ``<name>`` loading into ``raw_<name>`` of the project warehouse."""
    if config.settings.warehouse.kind == "ducklake":  # the catalog in Postgres, Parquet files
        from dango_dagster.lake import lake_for

        lake = lake_for(config)
        lake.data_path.mkdir(parents=True, exist_ok=True)
        destination: Any = lake.dlt_destination()
    else:
        config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        destination = dlt.destinations.duckdb(str(config.warehouse_path))
    return dlt.pipeline(
        pipeline_name=source.name,
        destination=destination,
        dataset_name=source.schema_name,
        pipelines_dir=str(pipelines_dir or pipelines_root(config)),
    )
