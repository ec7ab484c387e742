"""``dango-dagster api serve`` and ``api key create|list|revoke``: run and open the query API."""

from __future__ import annotations

import argparse
import json
import os
import sys

from dango_dagster.cli.errors import EXIT_OK

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from dango_dagster.cli import add_project_arg

    api = subparsers.add_parser("api", help="serve the read-only query API; manage its keys")
    sub = api.add_subparsers(dest="api_command", metavar="ACTION", required=True)

    serve = sub.add_parser("serve", help="serve POST /api/query over the published snapshot")
    add_project_arg(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8800, help="port (default 8800)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (default 1; rate limits are counted per process)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.set_defaults(handler=_serve)

    key = sub.add_parser("key", help="create, list or revoke API keys")
    key_sub = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    create = key_sub.add_parser("create", help="create a key (printed once, only its hash kept)")
    add_project_arg(create)
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--json", action="store_true", help="machine-readable output")
    create.set_defaults(handler=_create)

    listing = key_sub.add_parser("list", help="names, prefixes, created and last used")
    add_project_arg(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.set_defaults(handler=_list)

    revoke = key_sub.add_parser("revoke", help="revoke a key by id, name or prefix")
    add_project_arg(revoke)
    revoke.add_argument("key", metavar="ID_NAME_OR_PREFIX")
    revoke.set_defaults(handler=_revoke)


def _store(args: argparse.Namespace):  # -> KeyStore
    from dango_dagster.api.keys import KeyStore
    from dango_dagster.config import load_config

    return KeyStore(load_config(args.project).api_keys_path)


def _create(args: argparse.Namespace) -> int:
    secret, record = _store(args).create(args.name)
    if args.json:
        print(json.dumps({"key": secret, **record.public()}, indent=2))
        return EXIT_OK
    print(f"created API key {record.id} ({record.name!r}):\n")
    print(f"    {secret}\n")
    print("This is the only time the key is shown; only its hash is stored. Send it as")
    print("'Authorization: Bearer <key>', or `export DANGO_API_KEY=<key>` for the query command.")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    keys = _store(args).list()
    if not args.all:
        keys = [k for k in keys if k.active]
    if args.json:
        print(json.dumps([k.public() for k in keys], indent=2))
        return EXIT_OK
    if not keys:
        print("no API keys; create one with `dango-dagster api key create --name NAME`")
        return EXIT_OK
    header = ("ID", "NAME", "PREFIX", "CREATED", "LAST USED", "STATUS")
    rows = [
        (
            k.id,
            k.name,
            k.prefix + "...",
            k.created_at,
            k.last_used_at or "never",
            "active" if k.active else f"revoked {k.revoked_at}",
        )
        for k in keys
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    record = _store(args).revoke(args.key)
    print(f"revoked {record.id} ({record.name!r}); running servers refuse it from now on")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from dango_dagster.config import PROJECT_ENV_VAR, load_config

    config = load_config(args.project)  # validates project.yml before binding the port
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    import uvicorn

    # Worker processes import the app factory afresh; they find the project through the env.
    os.environ[PROJECT_ENV_VAR] = str(config.root)
    if args.host not in _LOOPBACK:
        print(
            f"warning: serving on {args.host}: API keys travel in a header, so put TLS (a "
            "reverse proxy) in front of this port.",
            file=sys.stderr,
        )
    published = config.published_snapshot_path
    if config.settings.warehouse.kind == "ducklake":  # the pinned DuckLake snapshot
        from dango_dagster.lake.catalog import published_file

        published = published_file(config)
    if not published.exists():
        print(
            f"note: no published snapshot yet at {published}; queries get "
            "503 until the pipeline publishes one (no restart needed).",
            file=sys.stderr,
        )
    print(
        f"query API for {config.root} on http://{args.host}:{args.port} "
        f"(reads {published}, audit {config.audit_log_path})",
        flush=True,
    )
    uvicorn.run(
        "dango_dagster.api.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,  # the audit log records every request
    )
    return EXIT_OK
