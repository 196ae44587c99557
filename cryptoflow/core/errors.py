"""Errors a user can act on: each message says what went wrong and what to do."""


class CryptoflowError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class ConfigError(CryptoflowError):
    """A setting is missing, mistyped or out of range."""


class ServiceError(CryptoflowError):
    """A backing service (Kafka, PostgreSQL, Java) is missing, unreachable or failed to start."""


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message (a JVM error's is followed by its stack), or its
    type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def error_summary(e: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an unexpected error, for a one-line message. A Py4J error's
    first line only names the JVM call (``An error occurred while calling o45.start.``);
    the Java exception on the next one says what went wrong."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if text.startswith("An error occurred while calling") and len(lines) > 1:
        text = lines[1].lstrip(": ")
    summary = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."
