"""Settings: parsing, validation and masking (no I/O beyond a temp .env file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cryptoflow.cli.config import to_json
from cryptoflow.core.config import load_settings, mask_dsn, settings_help
from cryptoflow.core.errors import ConfigError


def test_defaults_are_the_three_symbols_and_live_binance():
    s = load_settings(environ={}, dotenv=None)
    assert s.symbols == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    assert s.source == "binance"
    assert s.ws_url == "wss://stream.binance.com:9443"
    assert s.spark_master == "local[2]"
    assert s.embedded_kafka and s.embedded_postgres


def test_environment_values_are_parsed_to_field_types():
    s = load_settings(
        environ={
            "CRYPTOFLOW_SYMBOLS": " solusdt, xrpusdt ",
            "CRYPTOFLOW_KAFKA_PORT": "29092",
            "CRYPTOFLOW_DATA_DIR": "/tmp/somewhere",
            "PATH": "/usr/bin",
        },
        dotenv=None,
    )
    assert s.symbols == ["SOLUSDT", "XRPUSDT"]
    assert s.kafka_port == 29092
    assert s.data_dir == Path("/tmp/somewhere")
    assert s.table_path("silver") == str(Path("/tmp/somewhere/lake/silver"))


def test_unknown_setting_is_an_error_with_a_suggestion():
    with pytest.raises(
        ConfigError,
        match=r"unknown setting CRYPTOFLOW_KAFKA_PROT "
        r"\(did you mean CRYPTOFLOW_KAFKA_PORT\?\)",
    ):
        load_settings(environ={"CRYPTOFLOW_KAFKA_PROT": "1"}, dotenv=None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CRYPTOFLOW_KAFKA_PORT": "abc"}, "CRYPTOFLOW_KAFKA_PORT='abc' is not a valid int"),
        ({"CRYPTOFLOW_SOURCE": "kraken"}, "expected one of binance, sim, csv"),
        ({"CRYPTOFLOW_SYMBOLS": ","}, "CRYPTOFLOW_SYMBOLS is empty"),
        ({"CRYPTOFLOW_SYMBOLS": "BTC-USDT"}, "is not a Binance symbol"),
        ({"CRYPTOFLOW_WINDOW_SECONDS": "0"}, "CRYPTOFLOW_WINDOW_SECONDS must be at least 1"),
        ({"CRYPTOFLOW_BATCH_PLACEMENT": "gpu"}, "expected one of auto, executors, driver"),
        ({"CRYPTOFLOW_SMALL_BATCH_ROWS": "-1"}, "CRYPTOFLOW_SMALL_BATCH_ROWS must not be negative"),
    ],
)
def test_bad_values_fail_early_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ=env, dotenv=None)


def test_dotenv_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nCRYPTOFLOW_SOURCE=sim\nexport CRYPTOFLOW_KAFKA_TOPIC_PREFIX='t1'\n"
        'CRYPTOFLOW_SIM_PORT="19999"\n'
    )
    s = load_settings(environ={"CRYPTOFLOW_KAFKA_TOPIC_PREFIX": "t2"}, dotenv=env_file)
    assert (s.source, s.kafka_topic, s.sim_port) == ("sim", "t2.trades.raw", 19999)
    assert s.ws_url == "ws://127.0.0.1:19999"


def test_malformed_dotenv_line_names_file_and_line(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("CRYPTOFLOW_SOURCE=sim\nnot a pair\n")
    with pytest.raises(ConfigError, match=r"\.env:2: expected KEY=VALUE"):
        load_settings(environ={}, dotenv=env_file)


def test_mask_dsn_hides_passwords_in_both_forms():
    assert (
        mask_dsn("postgresql://app:s3cret@db:5432/crypto") == "postgresql://app:***@db:5432/crypto"
    )
    assert mask_dsn("host=db password=s3cret user=app") == "host=db password=*** user=app"
    assert mask_dsn("postgresql://app@db/crypto") == "postgresql://app@db/crypto"


def test_config_json_masks_secrets_and_lists_tables():
    s = load_settings(
        environ={"CRYPTOFLOW_POSTGRES_DSN": "postgresql://app:hunter2@db:5432/crypto"}, dotenv=None
    )
    text = to_json(s)
    assert "hunter2" not in text
    data = json.loads(text)
    assert data["resolved"]["postgres"] == {
        "embedded": False,
        "dsn": "postgresql://app:***@db:5432/crypto",
    }
    assert set(data["resolved"]["tables"]) >= {"bronze", "silver", "quarantine", "gold"}


def test_every_setting_is_documented():
    for var, _default, doc in settings_help():
        assert var.startswith("CRYPTOFLOW_") and doc


def test_readme_settings_table_matches_the_code():
    from scripts.sync_readme import README, synced

    text = README.read_text()
    assert synced(text) == text, "README settings table is stale: run scripts/sync_readme.py"


def test_every_field_has_a_parsed_type_and_survives_to_env():
    from dataclasses import fields

    from cryptoflow.core.config import Settings

    for f in fields(Settings):
        assert f.type in {"int", "bool", "Path", "list[str]", "str"}, f"{f.name}: {f.type}"
    s = load_settings(environ={"CRYPTOFLOW_SYMBOLS": "SOLUSDT"}, dotenv=None)
    assert load_settings(environ=s.to_env(), dotenv=None) == s


def test_kafka_cluster_ids_never_look_like_options():
    from cryptoflow.core.services.kafka import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_streams_choose_kinds_in_registry_order_with_trade_always_on():
    s = load_settings(environ={"CRYPTOFLOW_STREAMS": "bookTicker, kline_1m"}, dotenv=None)
    assert [k.name for k in s.stream_kinds] == ["trade", "kline_1m", "bookTicker"]
    assert s.topics == ["binance.trades.raw", "binance.klines.raw", "binance.bookticker.raw"]
    default = load_settings(environ={}, dotenv=None)
    assert [k.name for k in default.stream_kinds] == ["trade", "aggTrade", "kline_1m", "bookTicker"]


def test_unknown_stream_kind_and_time_unit_are_named():
    with pytest.raises(
        ConfigError, match="unknown stream kind\\(s\\) depth; known: trade, aggTrade"
    ):
        load_settings(environ={"CRYPTOFLOW_STREAMS": "trade,depth"}, dotenv=None)
    with pytest.raises(ConfigError, match="CRYPTOFLOW_BINANCE_TIME_UNIT='NANO'"):
        load_settings(environ={"CRYPTOFLOW_BINANCE_TIME_UNIT": "NANO"}, dotenv=None)


def test_a_batch_runs_in_the_driver_locally_and_in_executors_on_a_cluster():
    local = load_settings(environ={}, dotenv=None)
    assert local.batch_placement == "auto" and not local.batch_in_executors
    assert local.replace(spark_master="spark://h:7077").batch_in_executors
    assert local.replace(spark_workers=2).batch_in_executors  # the local standalone cluster
    assert local.replace(batch_placement="executors").batch_in_executors
    assert not local.replace(
        spark_master="spark://h:7077", batch_placement="driver"
    ).batch_in_executors
