"""Every private dagster-dbt and dbt-core touchpoint, fenced in one place with a version check.

Running dbt inside the run's process (``inprocess``) and skipping dagster-dbt's ``dbt --version``
subprocess and in-process adapter (``DangoDbtCliResource``) use internals that neither project
promises to keep: dagster-dbt's ``DbtCliInvocation`` constructor, ``_get_unique_target_path``,
``_cli_version`` and ``_initialize_dbt_core_adapter``; dbt's stdout-capture hooks, adapter factory
and event logger cleanup; dbt-duckdb's cached database. They were written against the versions in
``TESTED``. ``supported()`` checks the installed versions and that every touchpoint still exists;
when not, the caller takes the public path (``DbtCliResource.cli``: dbt as a subprocess) and one
warning says why. Nothing outside this module imports those internals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from importlib import metadata
from types import SimpleNamespace
from typing import Any

__all__ = ["TESTED", "dagster_dbt_internals", "dbt_internals", "supported"]

# distribution -> the release series (major.minor) the private hooks were written against
TESTED = {"dagster-dbt": "0.29", "dbt-core": "1.11"}

_log = logging.getLogger(__name__)


def _series(version: str) -> str:
    return ".".join(version.split(".")[:2])


@functools.cache
def dbt_internals() -> SimpleNamespace:
    """dbt-core's (and dbt-duckdb's) private hooks ``InProcessDbt`` uses."""
    from dbt.adapters.factory import FACTORY, reset_adapters
    from dbt.cli.main import dbtRunner
    from dbt_common.events.event_manager_client import cleanup_event_logger
    from dbt_common.events.functions import capture_stdout_logs, stop_capture_stdout_logs

    manager: Any = None  # another adapter: nothing cached at class level to close
    with contextlib.suppress(ImportError):
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager as manager

    return SimpleNamespace(
        dbtRunner=dbtRunner,
        capture_stdout_logs=capture_stdout_logs,
        stop_capture_stdout_logs=stop_capture_stdout_logs,
        reset_adapters=reset_adapters,
        FACTORY=FACTORY,
        cleanup_event_logger=cleanup_event_logger,
        DuckDBConnectionManager=manager,
    )


@functools.cache
def dagster_dbt_internals() -> SimpleNamespace:
    """dagster-dbt's internals ``in_process_cli`` follows ``DbtCliResource.cli`` with."""
    from dagster_dbt.asset_utils import (
        extract_runtime_selection_from_args,
        get_updated_cli_invocation_params_for_context,
    )
    from dagster_dbt.compat import DBT_PYTHON_VERSION
    from dagster_dbt.core.dbt_cli_invocation import (
        PARTIAL_PARSE_FILE_NAME,
        DbtCliInvocation,
        _get_dbt_target_path,
    )
    from dagster_dbt.core.resource import DbtCliResource
    from dagster_dbt.dagster_dbt_translator import DagsterDbtTranslator, validate_opt_translator
    from dagster_dbt.dbt_manifest import validate_manifest

    for name in ("_get_unique_target_path", "_cli_version", "_initialize_dbt_core_adapter"):
        if not hasattr(DbtCliResource, name):
            raise AttributeError(f"DbtCliResource.{name} is gone")
    return SimpleNamespace(
        extract_runtime_selection_from_args=extract_runtime_selection_from_args,
        get_updated_cli_invocation_params_for_context=get_updated_cli_invocation_params_for_context,
        DBT_PYTHON_VERSION=DBT_PYTHON_VERSION,
        PARTIAL_PARSE_FILE_NAME=PARTIAL_PARSE_FILE_NAME,
        DbtCliInvocation=DbtCliInvocation,
        get_dbt_target_path=_get_dbt_target_path,
        DagsterDbtTranslator=DagsterDbtTranslator,
        validate_opt_translator=validate_opt_translator,
        validate_manifest=validate_manifest,
    )


def unique_target_path(resource: Any, context: Any) -> Any:
    """dagster-dbt's per-invocation target folder (``target/<op>-<run>-<id>``)."""
    return resource._get_unique_target_path(context=context)


@functools.cache
def supported() -> bool:
    """Whether the installed dagster-dbt and dbt-core are the ones the private hooks fit.

    False (with one warning saying why) sends every caller to the public subprocess path.
    """
    problems = []
    for dist, series in TESTED.items():
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            problems.append(f"{dist} is not installed")
            continue
        if _series(installed) != series:
            problems.append(f"{dist} {installed} (written for {series}.x)")
    if not problems:
        try:
            dbt_internals()
            dagster_dbt_internals()
        except (ImportError, AttributeError) as exc:
            problems.append(f"a private hook moved: {exc}")
    if problems:
        message = (
            "dbt runs as a subprocess (the public DbtCliResource path), not in process: "
            + "; ".join(problems)
            + ". Everything works; each dbt command costs ~2-3 s more. Install the tested "
            "versions (requirements.lock) to get the in-process path back."
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        _log.warning(message)
        return False
    return True
