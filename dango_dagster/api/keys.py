"""API keys: ``dango_ak_<random>`` shown once, only a SHA-256 hash kept, 0600, revocable.

Decisions (see docs/API.md):

* A key is ``dango_ak_`` + ``secrets.token_urlsafe(32)`` (256 random bits). With that much
  entropy a plain SHA-256 is the standard store (as for GitHub or Stripe tokens): a slow hash
  such as scrypt protects guessable passwords, and would only cost every request milliseconds.
* ``verify`` compares the presented key's hash with every stored hash using
  ``hmac.compare_digest`` and no early exit, so timing says nothing about which key is close.
* The store is ``config.api_keys_path`` (JSON, mode 0600), written atomically under an exclusive
  ``flock`` on a sidecar lock file, so the CLI (create/revoke) and several server workers (which
  record "last used") never lose each other's updates. Servers notice changes by the file's
  inode and mtime, so a revoked key stops working on the next request, without a restart.
* "Last used" is kept in memory per request and flushed at most every few seconds (and at
  shutdown): a file write per request would serialize every query on one lock.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dango_dagster._fs import atomic_write_json
from dango_dagster.errors import KeyStoreError

if sys.platform != "win32":
    import fcntl

KEY_PREFIX = "dango_ak_"
_SHOWN_PREFIX_CHARS = 6  # characters after "dango_ak_" kept to recognise a key in `key list`
_FORMAT_VERSION = 1


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    hash: str
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """Everything but the hash: what `api key list --json` prints."""
        data = asdict(self)
        data.pop("hash")
        return data


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._mutex = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._keys: list[ApiKey] = []
        self._pending_use: dict[str, str] = {}

    # --- file access ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if sys.platform != "win32":
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self) -> list[ApiKey]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"{self.path} is unreadable or not JSON: {exc}") from exc
        entries = raw.get("keys") if isinstance(raw, dict) else None
        if not isinstance(entries, list):
            raise KeyStoreError(f"{self.path} has no 'keys' list; restore it from a backup.")
        fields = set(ApiKey.__dataclass_fields__)
        try:
            return [ApiKey(**{k: v for k, v in e.items() if k in fields}) for e in entries]
        except (TypeError, AttributeError) as exc:
            raise KeyStoreError(f"{self.path} has a malformed key entry: {exc}") from exc

    def _write(self, keys: list[ApiKey]) -> None:
        data = {"version": _FORMAT_VERSION, "keys": [asdict(k) for k in keys]}
        atomic_write_json(self.path, data, mode=0o600)
        os.chmod(self.path, 0o600)  # in case a umask or an older file widened it

    # --- CLI operations --------------------------------------------------------------------
    def create(self, name: str) -> tuple[str, ApiKey]:
        """A new key; the plain key is returned here and never stored or shown again."""
        name = name.strip()
        if not name:
            raise KeyStoreError("A key needs a non-empty --name (who or what uses it).")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._file_lock():
            keys = self._read()
            if any(k.name == name and k.active for k in keys):
                raise KeyStoreError(
                    f"An active key named {name!r} exists; revoke it or choose another name."
                )
            record = ApiKey(
                id="k_" + secrets.token_hex(4),
                name=name,
                prefix=secret[: len(KEY_PREFIX) + _SHOWN_PREFIX_CHARS],
                hash=hash_key(secret),
                created_at=_now(),
            )
            self._write([*keys, record])
        return secret, record

    def list(self) -> list[ApiKey]:
        return self._read()

    def revoke(self, ident: str) -> ApiKey:
        """Revoke by id, name or shown prefix (must match exactly one active key)."""
        with self._file_lock():
            keys = self._read()
            matches = [
                k for k in keys if k.active and ident in (k.id, k.name, k.prefix, k.prefix + "...")
            ]
            if not matches:
                raise KeyStoreError(f"No active key with id, name or prefix {ident!r}.")
            if len(matches) > 1:
                ids = ", ".join(k.id for k in matches)
                raise KeyStoreError(f"{ident!r} matches several keys ({ids}); use the id.")
            revoked = replace(matches[0], revoked_at=_now())
            self._write([revoked if k.id == revoked.id else k for k in keys])
        return revoked

    # --- server side -----------------------------------------------------------------------
    def _refresh(self) -> builtins.list[ApiKey]:  # `list` is a method name in this class
        try:
            st = os.stat(self.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        with self._mutex:
            if seen != self._seen or seen is None:
                self._keys = self._read() if seen is not None else []
                self._seen = seen
            return self._keys

    def verify(self, presented: str | None) -> ApiKey | None:
        """The active key matching ``presented``, or None (missing, unknown or revoked)."""
        if not presented or not presented.startswith(KEY_PREFIX) or len(presented) > 200:
            return None
        digest = hash_key(presented)
        found: ApiKey | None = None
        for key in self._refresh():
            if hmac.compare_digest(key.hash, digest):
                found = key
        if found is None or not found.active:
            return None
        with self._mutex:
            self._pending_use[found.id] = _now()
        return found

    def flush_usage(self) -> None:
        """Write pending "last used" times (best effort: a failure is retried next flush)."""
        with self._mutex:
            pending, self._pending_use = self._pending_use, {}
        if not pending:
            return
        try:
            with self._file_lock():
                keys = self._read()
                updated = [
                    replace(k, last_used_at=max(pending[k.id], k.last_used_at or ""))
                    if k.id in pending
                    else k
                    for k in keys
                ]
                self._write(updated)
        except (OSError, KeyStoreError):
            with self._mutex:
                for key_id, when in pending.items():
                    self._pending_use.setdefault(key_id, when)
