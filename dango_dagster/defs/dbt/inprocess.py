"""dbt inside the run's own process: ``dbt build`` without a second Python.

A dbt subprocess pays its own interpreter start and dbt's imports (2-3 s on 2 cores), which the
run worker has already paid: importing dagster-dbt imports dbt-core. ``InProcessDbt`` runs dbt's
programmatic entry point (``dbtRunner``) on a thread of this process and looks, to dagster-dbt's
``DbtCliInvocation``, exactly like the subprocess it would otherwise start: the same JSON log lines
on ``stdout`` (written by dbt's own stdout logger, captured), an exit code, and ``send_signal`` to
stop it. Every Dagster event (an ``Output`` per model, an ``AssetCheckResult`` per test, the
``--select`` of a subset) therefore still comes from dagster-dbt's own code, unchanged.

dbt keeps process-global state: flags, registered adapters, its event loggers, and dbt-duckdb's
cached DuckDB database. So one invocation runs at a time per process, and after each one
everything it opened is closed and forgotten: above all the warehouse file, which another process
must be able to open for writing as soon as the warehouse lock is released, and the adapter, so
the next project built in this process does not inherit the last one's profile.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import shutil
import subprocess
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dango_dagster.defs.dbt._compat import (
    dagster_dbt_internals,
    dbt_internals,
    unique_target_path,
)

if TYPE_CHECKING:
    from dagster_dbt import DbtCliResource
    from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

# Commands that take --project-dir/--target-path and run fine in process; others use a subprocess.
IN_PROCESS_COMMANDS = frozenset({"build", "run", "test", "seed", "snapshot", "compile", "parse"})
# dbt's global state admits one invocation at a time per process.
_ONE_AT_A_TIME = threading.Lock()
# Loggers dbt (re)creates on each invocation; their handlers hold a stream and dbt.log open.
_DBT_PYTHON_LOGGERS = ("stdout_log", "file_log")
_CANCEL_EVERY_SECONDS = 0.05


class _Pipe:
    """The read end of the fake dbt process's stdout: its lines as bytes, until dbt finishes."""

    def __init__(self) -> None:
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.closed = False

    def put(self, line: bytes | None) -> None:
        self._lines.put(line)

    def __iter__(self) -> Iterator[bytes]:
        while (line := self._lines.get()) is not None:
            yield line

    def __enter__(self) -> _Pipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


class _LineWriter:
    """What dbt's stdout logger writes to (a text stream): forwards complete lines to the pipe."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._partial = ""
        self.saw_error = False

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.strip():
                self.saw_error = self.saw_error or '"level": "error"' in line
                self._pipe.put(line.encode())
        return len(text)

    def flush(self) -> None:
        pass

    def close_partial(self) -> None:
        if self._partial.strip():
            self._pipe.put(self._partial.encode())
        self._partial = ""


class InProcessDbt:
    """A dbt command running on a thread of this process, behind ``subprocess.Popen``'s interface.

    Only what ``DbtCliInvocation`` uses: ``args``, ``stdout`` (lines of dbt's JSON log),
    ``wait``, ``returncode`` and ``send_signal``. The exit code follows dbt's CLI: 0 success,
    1 a node failed (model error, failing test), 2 dbt itself failed (compile error, bad args).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        executable: str = "dbt",
    ) -> None:
        self.args = [executable, *args]
        self.returncode: int | None = None
        self.stdout = _Pipe()
        self._stop_requested = False
        self._in_dbt = False  # True only while dbtRunner runs: where a stop may be delivered
        self._state = threading.Lock()
        _ONE_AT_A_TIME.acquire()
        try:
            self._thread = threading.Thread(
                target=self._main,
                args=(list(args), cwd, dict(env or {})),
                name="dbt-in-process",
                daemon=True,
            )
            self._thread.start()
        except BaseException:
            _ONE_AT_A_TIME.release()
            raise

    def _main(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        code = 2
        try:
            code = self._invoke(args, cwd, env)
        except BaseException:  # noqa: BLE001 - reported on stdout, like a crashing dbt process
            self.stdout.put(traceback.format_exc().encode())
        finally:
            self.returncode = code
            _ONE_AT_A_TIME.release()
            self.stdout.put(None)

    def _invoke(self, args: list[str], cwd: Path, env: Mapping[str, str]) -> int:
        dbt = dbt_internals()
        writer = _LineWriter(self.stdout)
        dbt.capture_stdout_logs(cast(Any, writer))
        try:
            # A dbt process would run in the project folder with its own environment: relative
            # paths in profiles.yml (e.g. a DuckDB `path`) resolve against it. Both are
            # process-wide, hence one dbt at a time.
            with _environ(env), contextlib.chdir(cwd):
                with self._state:
                    self._in_dbt = True
                try:
                    result = dbt.dbtRunner().invoke(args)
                finally:
                    with self._state:
                        self._in_dbt = False
        finally:
            # Reached however dbt ended, a stop included (delivered at the latest just above).
            dbt.stop_capture_stdout_logs()
            writer.close_partial()
            release_dbt_state()
        if result.success:
            return 0
        if result.exception is None:
            return 1
        if not writer.saw_error:  # failed before dbt's logger existed (e.g. a bad flag): say why
            name = type(result.exception).__name__
            self.stdout.put(f"dbt failed: {name}: {result.exception}".encode())
        return 2

    def poll(self) -> int | None:
        return None if self._thread.is_alive() else self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired(self.args, cast(float, timeout))
        return cast(int, self.returncode)

    def send_signal(self, sig: int) -> None:
        """What SIGINT does to a dbt process, without a signal.

        dbt's own Ctrl-C path: a ``KeyboardInterrupt`` in dbt's main thread, which cancels the
        open connections, marks the run interrupted and returns. dbt's main thread sleeps until
        a node finishes, so the running queries are interrupted too (repeatedly, for any query
        started in between) to wake it at once.
        """
        with self._state:
            if self._stop_requested or not self._in_dbt:
                return
            self._stop_requested = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(cast(int, self._thread.ident)), ctypes.py_object(KeyboardInterrupt)
            )
        threading.Thread(target=self._cancel_queries, name="dbt-cancel", daemon=True).start()

    def _cancel_queries(self) -> None:
        factory = dbt_internals().FACTORY
        while self._thread.is_alive():
            for adapter in list(factory.adapters.values()):
                with contextlib.suppress(Exception):
                    adapter.cancel_open_connections()
            self._thread.join(_CANCEL_EVERY_SECONDS)


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` set in ``os.environ`` while dbt starts (it copies the environment then)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def release_dbt_state() -> None:
    """Close what dbt opened in this process and forget its adapters and loggers.

    ``reset_adapters`` closes dbt's connections; dbt-duckdb also caches the DuckDB database
    itself at class level (it would keep the warehouse file open, and hand the next project the
    same database), so that is closed and dropped explicitly.
    """
    dbt = dbt_internals()
    dbt.reset_adapters()
    manager = dbt.DuckDBConnectionManager
    if manager is not None:  # None: another adapter, reset_adapters was all there was to do
        with manager._LOCK:
            env, manager._ENV = manager._ENV, None
        if env is not None:
            env.close()
    dbt.cleanup_event_logger()
    for name in _DBT_PYTHON_LOGGERS:
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


def run_dbt(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> tuple[int, list[str]]:
    """Run one dbt command in process to completion: its exit code and its error messages."""
    import orjson

    process = InProcessDbt([*args, "--log-format", "json"], cwd=cwd, env=env)
    errors: list[str] = []
    for line in process.stdout:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            errors.append(line.decode(errors="replace"))
            continue
        if event.get("info", {}).get("level") == "error":
            errors.append(event["info"].get("msg", ""))
    return process.wait(), errors


def in_process_cli(
    resource: DbtCliResource,
    args: Sequence[str],
    *,
    raise_on_error: bool = True,
    manifest: Any = None,
    dagster_dbt_translator: Any = None,
    context: Any = None,
    target_path: Path | None = None,
) -> DbtCliInvocation:
    """``DbtCliResource.cli`` with dbt run by ``InProcessDbt`` instead of a subprocess.

    Follows dagster-dbt 0.29's ``cli()`` step by step with its own helpers: the same selection
    computed from the context (subsets, selected asset checks), the same unique target folder
    seeded with the project's partial-parse file. What ``cli()`` hands the subprocess through its
    environment (``DBT_TARGET_PATH``, ``DBT_LOG_FORMAT=json``, ...) becomes flags here.
    """
    from dagster import get_dagster_logger

    ddbt = dagster_dbt_internals()
    translator = ddbt.validate_opt_translator(dagster_dbt_translator) or ddbt.DagsterDbtTranslator()
    cleaned_args, selects, excludes = ddbt.extract_runtime_selection_from_args(args)
    params = ddbt.get_updated_cli_invocation_params_for_context(
        context=context,
        manifest=ddbt.validate_manifest(manifest) if manifest else {},
        dagster_dbt_translator=translator,
        runtime_selects=selects,
        runtime_excludes=excludes,
    )
    project_dir = Path(
        params.dbt_project.project_dir if params.dbt_project else resource.project_dir
    )
    target_path = project_dir / (target_path or unique_target_path(resource, context))

    # Partial parsing: start from the project's last parse, as DbtCliInvocation.run does.
    parsed = ddbt.get_dbt_target_path()
    partial_name = ddbt.PARTIAL_PARSE_FILE_NAME
    partial_parse = (parsed if parsed.is_absolute() else project_dir / parsed).joinpath(
        partial_name
    )
    if partial_parse.exists() and not (target_path / partial_name).exists():
        target_path.mkdir(parents=True, exist_ok=True)
        shutil.copy(partial_parse, target_path / partial_name)

    profile_args = ["--profile", resource.profile] if resource.profile else []
    profile_args += ["--target", resource.target] if resource.target else []
    dbt_args = [*resource.global_config_flags, *cleaned_args, *profile_args]
    dbt_args += [*params.selection_args, "--project-dir", str(project_dir)]
    dbt_args += ["--target-path", str(target_path), "--log-path", str(target_path)]
    dbt_args += ["--log-format", "json", "--no-send-anonymous-usage-stats"]
    if resource.profiles_dir:
        dbt_args += ["--profiles-dir", os.fspath(resource.profiles_dir)]
    if params.indirect_selection:
        dbt_args += ["--indirect-selection", params.indirect_selection]

    process = InProcessDbt(
        dbt_args,
        cwd=project_dir,
        env={"DAGSTER_DBT_CLI": "true"},  # as dagster-dbt tells its dbt subprocess
        executable=resource.dbt_executable,
    )
    get_dagster_logger().info(f"Running dbt command in process: `{' '.join(process.args)}`.")
    return ddbt.DbtCliInvocation(
        process=cast(subprocess.Popen, process),
        manifest=params.manifest,
        dagster_dbt_translator=params.dagster_dbt_translator,
        project_dir=project_dir,
        target_path=target_path,
        raise_on_error=raise_on_error,
        context=context,
        adapter=None,
        cli_version=ddbt.DBT_PYTHON_VERSION,
        project=params.dbt_project,
    )
