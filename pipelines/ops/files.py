"""Files of the lake and the checkpoints, on a local disk or an object store (``s3a://``).

A local path (or ``file:`` URI) is read and written with ``pathlib``: no JVM, so
``cryptoflow checkpoints`` answers at once, also while the jobs run. Any other URI goes
through Hadoop's ``FileSystem`` API in the JVM of this process's Spark session, which knows
the S3A settings (``cryptoflow.core.spark.s3a_conf``); without a session, the first such call
starts one (``get_spark``), for the rest of the process.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyspark import SparkContext

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.spark import get_spark


def local_path(path: str) -> Path | None:
    """``path`` as a local filesystem path, or None for an object-store URI (s3a://...)."""
    if path.startswith("file:"):
        return Path(urlsplit(path).path)
    if "://" in path:
        return None
    return Path(path)


def join(base: str, *names: str) -> str:
    """``base``/``name``/... for a local path and a URI alike."""
    return "/".join([base.rstrip("/"), *names])


class Files:
    """The few file operations the operations need, for local paths and URIs alike."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings  # starts a Spark session for a URI when there is none

    # ----- reading
    def exists(self, path: str) -> bool:
        local = local_path(path)
        if local is not None:
            return local.exists()
        fs, p = self._hadoop(path)
        return bool(fs.exists(p))

    def is_file(self, path: str) -> bool:
        local = local_path(path)
        if local is not None:
            return local.is_file()
        fs, p = self._hadoop(path)
        return bool(fs.exists(p) and fs.getFileStatus(p).isFile())

    def read_text(self, path: str) -> str:
        """The file's text (UTF-8); FileNotFoundError when it is missing."""
        local = local_path(path)
        if local is not None:
            return local.read_text()
        fs, p = self._hadoop(path)
        if not fs.exists(p):
            raise FileNotFoundError(path)
        stream = fs.open(p)
        try:
            data = self._jvm().org.apache.commons.io.IOUtils.toByteArray(stream)
        finally:
            stream.close()
        return bytes(data).decode()

    def list_dirs(self, path: str) -> list[str]:
        """Names of the directories directly in ``path`` (none when it is missing)."""
        return sorted(name for name, is_dir, _ in self._entries(path) if is_dir)

    def list_files(self, path: str) -> dict[str, datetime]:
        """Name -> modification time of the files directly in ``path`` (none when missing)."""
        return {name: mtime for name, is_dir, mtime in self._entries(path) if not is_dir}

    def _entries(self, path: str) -> list[tuple[str, bool, datetime]]:
        local = local_path(path)
        if local is not None:
            if not local.is_dir():
                return []
            return [
                (e.name, e.is_dir(), datetime.fromtimestamp(e.stat().st_mtime, UTC))
                for e in local.iterdir()
            ]
        fs, p = self._hadoop(path)
        if not fs.exists(p):
            return []
        return [
            (
                st.getPath().getName(),
                bool(st.isDirectory()),
                datetime.fromtimestamp(st.getModificationTime() / 1000, UTC),
            )
            for st in fs.listStatus(p)
        ]

    # ----- writing
    def write_text(self, path: str, text: str) -> None:
        """Write the whole file at once: a local file through a renamed temporary, an object
        by one PUT (an object store shows a whole object or none)."""
        local = local_path(path)
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.replace(local)
            return
        fs, p = self._hadoop(path)
        out = fs.create(p, True)
        try:
            out.write(text.encode())
        finally:
            out.close()

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` (a file or a directory) to ``dst``, which must not exist. On an object
        store a directory's rename copies and deletes each object: not atomic."""
        local = local_path(src)
        if local is not None:
            target = local_path(dst)
            assert target is not None, f"rename {src} to a URI {dst}"
            local.rename(target)
            return
        fs, p = self._hadoop(src)
        target_path = self._jvm().org.apache.hadoop.fs.Path(dst)
        if not fs.rename(p, target_path):
            raise OSError(f"could not rename {src} to {dst}")

    # ----- Hadoop
    def _jvm(self) -> Any:
        return _context(self._settings)._jvm

    def _hadoop(self, path: str) -> tuple[Any, Any]:
        """(Hadoop FileSystem, Path) of a URI, in the session's Hadoop configuration."""
        sc = _context(self._settings)
        p = self._jvm().org.apache.hadoop.fs.Path(path)
        return p.getFileSystem(sc._jsc.hadoopConfiguration()), p


def _context(settings: Settings | None) -> SparkContext:
    """The Spark context of this process, started for ``settings`` when there is none."""
    sc = SparkContext._active_spark_context
    if sc is None:
        if settings is None:
            raise CryptoflowError("an object-store path needs a Spark session (or the settings)")

        sc = get_spark(settings, "cryptoflow-files").sparkContext
    return sc
