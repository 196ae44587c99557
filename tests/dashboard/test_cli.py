"""`cryptoflow dashboard` checks its arguments up front and fails with one actionable line."""

from __future__ import annotations

import argparse

import pytest

from cryptoflow.cli import build_parser
from cryptoflow.cli.dashboard import _checked, run
from cryptoflow.core.errors import ConfigError, ServiceError
from tests.conftest import free_port, make_settings


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["dashboard", *argv])


def test_defaults_come_from_settings_and_options_override_them(tmp_path):
    s = make_settings(tmp_path, dashboard_port=9001, dashboard_minutes=7)
    assert _checked(_args(), s) == ("127.0.0.1", 9001, 7, 2)
    assert _checked(_args("--host", "0.0.0.0", "--port", "0", "--refresh", "5"), s) == (
        "0.0.0.0", 0, 7, 5,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port 70000: expected 0-65535 (0 picks a free port)"),
        (["--minutes", "0"], "--minutes 0: show at least 1 minute of history"),
        (["--refresh", "0"], "--refresh 0: refresh at most once a second"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(tmp_path, argv, message):
    with pytest.raises(ConfigError) as e:
        _checked(_args(*argv), make_settings(tmp_path))
    assert str(e.value) == message


def test_unreachable_database_fails_before_serving(tmp_path):
    s = make_settings(
        tmp_path, postgres_dsn=f"postgresql://nobody:pw@127.0.0.1:{free_port()}/crypto"
    )
    with pytest.raises(ServiceError, match=r"PostgreSQL at .*nobody:\*\*\*@.* is unreachable"):
        run(s, _args("--port", "0"))
