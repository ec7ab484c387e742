"""The read-only query API: ``POST /api/query`` over the published snapshot (see docs/API.md).

Modules, one concept each: ``app`` (routes and wiring), ``middleware`` (audit and body cap),
``sql_guard`` (one read statement, decided by DuckDB's parser), ``pool`` (hardened read-only
connections to the published snapshot), ``runner`` (deadline and row cap), ``jsonvalues``
(DuckDB values as JSON), ``keys``, ``audit``, ``ratelimit``, ``models`` (the wire format),
``client`` (what `dango-dagster query` uses).

Nothing here is imported by the CLI at start-up; importing this package stays cheap.
"""
