"""The MLflow store of a run checked before any data is read or run dir made, in one line.

Why: MLflow itself waits and retries. A server that does not answer (train.mlflow_uri http://127.0.0.1:9) hung
silently for minutes after the `data:` line, a read-only sqlite store retried for about 107 s, and either then
failed with a run dir already made and left empty. Here a server gets one TCP connection attempt of at most
CONNECT_TIMEOUT_S, a local store (sqlite file, folder) a check that its file and folder can be written.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from cnnlab.config import Recipe
from cnnlab.engine.tracking import mlflow_uri
from cnnlab.errors import ConfigError

CONNECT_TIMEOUT_S = 3.0
WITHOUT = "or train without MLflow: --set 'train.log_to=[]'"


def check_tracking_store(r: Recipe) -> None:
    """One line when train.log_to names mlflow and its store cannot be reached or written."""
    if "mlflow" not in r.train.log_to:
        return
    uri = mlflow_uri(r)
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        _reachable(uri, parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80))
    elif parsed.scheme == "sqlite":
        _writable(uri, Path(uri[len("sqlite:///"):]).expanduser())
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme else uri).expanduser()
        _writable(uri, folder / "meta.yaml" if folder.is_dir() else folder)


def _reachable(uri: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        why = f"no answer within {CONNECT_TIMEOUT_S:g} s" if isinstance(e, TimeoutError) else \
            e.strerror or type(e).__name__
        raise ConfigError(f"MLflow tracking server {uri}: cannot connect ({why})",
                          f"start it (mlflow server --host {host} --port {port}), set train.mlflow_uri, {WITHOUT}") \
            from None


def _writable(uri: str, path: Path) -> None:
    """path (a file that may not exist yet) and its folder writable, or the nearest existing folder above it."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    blocked = next((p for p in (path, path.parent) if p.exists() and not os.access(p, os.W_OK)), None)
    if blocked is None and not os.access(folder, os.W_OK):
        blocked = folder
    if blocked is not None:
        raise ConfigError(f"MLflow store {uri}: {blocked} cannot be written (read-only)",
                          f"see who may write there: ls -ld {blocked}; set train.mlflow_uri elsewhere, {WITHOUT}")
