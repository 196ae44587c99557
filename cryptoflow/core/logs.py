"""Logging: one line per event, ``key=value`` numbers in the message.

Two destinations. The **log file** (``<data_dir>/logs/cryptoflow.log``) gets every record,
the libraries' included. The **terminal** (stderr) gets only the project's own loggers
(``cryptoflow``, ``ingestion``, ``pipelines``, ``expectations``): Great Expectations, py4j,
urllib3 and the like write to the file, whatever the level. ``verbose`` (``cryptoflow -v``)
puts everything on the terminal as well, at DEBUG. The Spark JVM logs through log4j to
``<data_dir>/logs/spark.log`` (``cryptoflow/core/log4j2.properties``, set in ``spark_conf``).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from io import TextIOWrapper
from pathlib import Path

from cryptoflow.core.config import Settings

#: Top-level packages whose loggers are the project's own: these reach the terminal.
OWN_LOGGERS = ("cryptoflow", "ingestion", "pipelines", "expectations", "bench", "__main__")
#: ``extra={FILE_ONLY: True}`` keeps a record off the terminal (a traceback the terminal
#: summarises in one line).
FILE_ONLY = "cryptoflow_file_only"
FORMAT = "%(asctime)s %(levelname)-5s %(name)s %(message)s"
#: Loggers that are chatty even at INFO; DEBUG from py4j is one line per call into the JVM.
_NOISY = ("py4j", "urllib3", "websockets")


class _State:
    log_file: Path | None = None
    verbose: bool = False
    terminal: logging.Handler | None = None


def log_dir(settings: Settings) -> Path:
    """Where every log of a run goes: ``<data_dir>/logs``."""
    return settings.data_dir.resolve() / "logs"


def default_log_file(settings: Settings) -> Path:
    return log_dir(settings) / "cryptoflow.log"


def log_file() -> Path | None:
    """The file ``setup_logging`` writes every record to (None: stderr only)."""
    return _State.log_file


def verbose() -> bool:
    """Whether ``setup_logging`` put the libraries' logs on the terminal (``-v``)."""
    return _State.verbose


def terminal_handler() -> logging.Handler | None:
    """The terminal's handler, e.g. to raise its level under a live status view."""
    return _State.terminal


def own_logger(name: str) -> bool:
    return name.split(".", 1)[0] in OWN_LOGGERS


class _TerminalFilter(logging.Filter):
    def __init__(self, everything: bool) -> None:
        super().__init__()
        self.everything = everything

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, FILE_ONLY, False):
            return False
        return self.everything or own_logger(record.name)


class _LazyFile(logging.handlers.RotatingFileHandler):
    """A file handler that creates the file (and its directory) on the first record, so a
    command that logs nothing (``--help``, ``config``) leaves no trace; rolled over at
    ``MAX_BYTES`` (``up`` logs a line per micro-batch), keeping ``BACKUPS`` old files."""

    MAX_BYTES, BACKUPS = 50 * 2**20, 3

    def __init__(self, path: Path) -> None:
        super().__init__(
            path, mode="a", maxBytes=self.MAX_BYTES, backupCount=self.BACKUPS,
            encoding="utf-8", delay=True,
        )  # fmt: skip

    def _open(self) -> TextIOWrapper:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's API)
        # an unwritable data dir must not print a traceback per record: the terminal still
        # shows the project's own lines
        pass


def setup_logging(
    level: str = "INFO", *, verbose: bool = False, log_file: Path | None = None
) -> None:
    """Log the project's records at ``level`` to stderr and every record to ``log_file``
    (``verbose``: everything on stderr too, at DEBUG; no ``log_file``: everything on
    stderr). Python warnings are logged as well (``py.warnings``), so a library's
    DeprecationWarning lands in the file."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO))
    formatter = logging.Formatter(FORMAT)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(formatter)
    # without a log file, stderr is where everything goes (a child whose stderr is its log)
    terminal.addFilter(_TerminalFilter(everything=verbose or log_file is None))
    root.addHandler(terminal)
    if log_file is not None:
        file = _LazyFile(log_file)
        file.setFormatter(formatter)
        root.addHandler(file)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    _State.log_file, _State.verbose, _State.terminal = log_file, verbose, terminal
