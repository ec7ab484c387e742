"""Transformation: dbt assets (dagster-dbt) over the project's dbt project, tests as checks."""
