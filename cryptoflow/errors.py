"""Errors a user can act on: each message says what went wrong and what to do."""


class CryptoflowError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class ConfigError(CryptoflowError):
    """A setting is missing, mistyped or out of range."""


class ServiceError(CryptoflowError):
    """A backing service (Kafka, PostgreSQL, Java) is missing, unreachable or failed to start."""
