"""Operations logic without services: checkpoint ownership and files, progress numbers,
history numbers, retention guard, rendering."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cryptoflow.core.config import load_settings
from pipelines.ops.batches import kafka_lag, progress_numbers
from pipelines.ops.checkpoints import (
    CheckpointConflict,
    ensure_checkpoint_owner,
    job_io,
    parse_offsets_file,
    read_checkpoint,
)
from pipelines.ops.maintain import MaintenanceError, check_retention, retention_properties
from pipelines.ops.render import render
from pipelines.ops.tables import parse_as_of, rows_written, tables_in


@pytest.fixture
def local(tmp_path: Path):
    return load_settings(
        environ={},
        dotenv=None,
        data_dir=tmp_path,
        lake_root=str(tmp_path / "lake"),
        checkpoint_root=str(tmp_path / "ckpt"),
    )


def test_checkpoint_owner_written_then_verified(local):
    first = ensure_checkpoint_owner(local, "trades", *job_io(local, "trades"))
    again = ensure_checkpoint_owner(local, "trades", *job_io(local, "trades"))
    assert again.created_at == first.created_at
    owner_file = Path(local.checkpoint_path("trades")) / "_cryptoflow_owner.json"
    stored = json.loads(owner_file.read_text())
    assert (stored["job"], stored["source"], stored["sink"]) == (
        "trades",
        f"kafka:{local.kafka_topic}",
        f"{local.lake}/bronze",
    )
    ensure_checkpoint_owner(local, "replay-silver", *job_io(local, "replay-silver"))
    rebuild = json.loads(
        (Path(local.checkpoint_path("replay-silver")) / "_cryptoflow_owner.json").read_text()
    )
    assert (rebuild["job"], rebuild["source"], rebuild["sink"]) == (
        "replay-silver",
        f"{local.lake}/bronze",
        f"{local.lake}/silver",
    )
    with pytest.raises(ValueError, match="unknown job 'silver'"):
        job_io(local, "silver")


def test_checkpoint_of_another_table_is_refused_with_what_to_do(local, tmp_path):
    ensure_checkpoint_owner(local, "replay-silver", *job_io(local, "replay-silver"))
    moved = local.replace(lake_root=str(tmp_path / "other-lake"))
    with pytest.raises(CheckpointConflict) as e:
        ensure_checkpoint_owner(moved, "replay-silver", *job_io(moved, "replay-silver"))
    ckpt = f"{tmp_path}/ckpt/replay-silver"
    assert str(e.value) == (
        f"checkpoint {ckpt} belongs to job replay-silver ({tmp_path}/lake/bronze -> "
        f"{tmp_path}/lake/silver), not to job replay-silver ({tmp_path}/other-lake/bronze -> "
        f"{tmp_path}/other-lake/silver): point CRYPTOFLOW_CHECKPOINT_ROOT / "
        "CRYPTOFLOW_LAKE_ROOT back at the tables this checkpoint was made for, or move "
        f"{ckpt} aside to start replay-silver from scratch (it then reprocesses its whole "
        "source)"
    )


def test_checkpoint_files_are_read(tmp_path):
    ckpt = tmp_path / "trades"
    (ckpt / "offsets").mkdir(parents=True)
    (ckpt / "commits").mkdir()
    (ckpt / "metadata").write_text('{"id":"q-1"}\n')
    meta = '{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{}}'
    for batch, offs in ((0, '{"raw":{"1":5,"0":7}}'), (1, '{"raw":{"0":9,"1":12}}')):
        (ckpt / "offsets" / str(batch)).write_text(f"v1\n{meta}\n{offs}")
    (ckpt / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}')
    info = read_checkpoint("trades", str(ckpt))
    assert (info.query_id, info.last_batch, info.last_committed) == ("q-1", 1, 0)
    assert info.positions == ("kafka raw p0=9 p1=12",)
    delta = '{"sourceVersion":1,"reservoirId":"x","reservoirVersion":7,"index":-1}'
    assert parse_offsets_file(f"v1\n{meta}\n{delta}") == ["delta version=7 index=-1"]
    assert not read_checkpoint("trades", str(tmp_path / "none")).exists


def test_progress_numbers_from_a_kafka_progress():
    progress = {
        "id": "q",
        "name": "trades",
        "batchId": 4,
        "timestamp": "2026-01-01T00:00:00.123Z",
        "numInputRows": 30,
        "durationMs": {"triggerExecution": 812},
        "sources": [
            {
                "description": "KafkaV2[Subscribe[raw]]",
                "endOffset": {"raw": {"0": 10, "1": 20}},
                "latestOffset": {"raw": {"0": 15, "1": 20}},
            }
        ],
        "sink": {"numOutputRows": 30},
        "observedMetrics": {"cryptoflow": {"late": 2, "other": 1}},
    }
    numbers = progress_numbers(progress)
    assert numbers["input_rows"] == 30 and numbers["output_rows"] == 30
    assert numbers["duration_ms"] == 812 and numbers["kafka_lag"] == 5 and numbers["late"] == 2
    assert "other" not in numbers and numbers["batch_time"].microsecond == 123000
    foreach = dict(progress, sink={"numOutputRows": -1}, sources=[{"description": "Delta"}])
    assert progress_numbers(foreach)["output_rows"] is None
    assert kafka_lag([{"description": "DeltaSource[x]"}]) is None


def test_history_numbers_per_operation():
    assert rows_written("WRITE", {"numOutputRows": "3", "numFiles": "1"}) == (3, "files+=1")
    merge = {"numTargetRowsInserted": "2", "numTargetRowsUpdated": "5"}
    assert rows_written("MERGE", merge) == (7, "inserted=2 updated=5 deleted=0")
    assert rows_written("DELETE", {"numDeletedRows": "4"}) == (0, "deleted=4")
    assert rows_written("OPTIMIZE", {"numAddedFiles": "1", "numRemovedFiles": "9"}) == (
        None,
        "files+=1 files-=9",
    )


def test_vacuum_below_the_window_is_refused(local):
    assert check_retention(local, None) == 168
    assert check_retention(local, 200) == 200
    with pytest.raises(MaintenanceError) as e:
        check_retention(local, 1)
    assert str(e.value).startswith(
        "refusing to vacuum with a retention of 1 h: below the time-travel window of 168 h "
        "(CRYPTOFLOW_TIME_TRAVEL_RETENTION_HOURS)"
    )
    assert retention_properties(168) == {
        "delta.deletedFileRetentionDuration": "interval 168 hours",
        "delta.logRetentionDuration": "interval 720 hours",
    }


def test_as_of_and_table_names():
    assert parse_as_of("12") == 12 and parse_as_of("2026-01-01 10:00") == "2026-01-01 10:00"
    assert tables_in("SELECT * FROM silver s JOIN gold g ON s.symbol = g.symbol") == [
        "silver",
        "gold",
    ]
    assert tables_in("SELECT silver_x FROM t") == []


def test_render_keeps_decimals_exact():
    rows = [("BTCUSDT", Decimal("90000.01000000"), None, b"\x01")]
    cols = ("symbol", "price", "note", "raw")
    assert json.loads(render(cols, rows, "json"))["price"] == "90000.01000000"
    assert render(cols, rows, "csv").splitlines()[1] == "BTCUSDT,90000.01000000,,01"
    table = render(cols, rows).splitlines()
    assert table[0].split() == list(cols) and "90000.01000000" in table[2]
