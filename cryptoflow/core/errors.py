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
