-- The lock gets a database of its own (and DuckLake's catalog, if used, another): one server,
-- separate concerns. The Dagster database is created by POSTGRES_DB.
CREATE DATABASE dango_lock;
CREATE DATABASE dango_lake;
