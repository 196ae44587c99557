"""The benchmarks' CPU accounting (bench/stack.py): process groups and CPU over a span."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from stack import (  # noqa: E402
    StackSampler,
    _cpu_seconds,
    cpu_per_trade,
    cpu_report,
    process_group,
)


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        ("/usr/bin/java -cp a.jar org.apache.spark.deploy.SparkSubmit pyspark-shell", "spark"),
        ("/usr/bin/java -Xmx512m -cp k.jar kafka.Kafka server.properties", "kafka"),
        ("/usr/lib/postgresql/15/bin/postgres -D /tmp/pg", "postgres"),
        ("postgres: checkpointer ", "postgres"),
        ("/app/.venv/bin/python -m cryptoflow up --source sim", "cryptoflow up"),
        ("/app/.venv/bin/python -m cryptoflow ingest --source sim", "cryptoflow ingest"),
        ("/app/.venv/bin/python /app/.venv/bin/cryptoflow simulate", "cryptoflow simulate"),
        ("/app/.venv/bin/python -m pyspark.daemon pyspark.worker", "pyspark workers"),
        ("/usr/bin/readlink -f x", "readlink"),
        ("", "?"),
    ],
)
def test_process_group_names_the_part_of_the_stack(cmdline: str, group: str) -> None:
    assert process_group(cmdline) == group


def test_cpu_between_uses_the_samples_inside_and_scales_to_the_span() -> None:
    sampler = StackSampler(roots=set)
    sampler.cpu_timeline = [
        (100.0, {"spark": 10.0}),
        (101.0, {"spark": 11.0, "postgres": 0.5}),
        (103.0, {"spark": 13.0, "postgres": 0.7}),
        (110.0, {"spark": 40.0, "postgres": 1.0}),
    ]
    # Samples at 101 and 103 fall inside [100.5, 104.5]: 2 s of spark over 2 s, scaled to 4 s.
    used = sampler.cpu_between(100.5, 104.5)
    assert used == pytest.approx({"spark": 4.0, "postgres": 0.4})
    assert list(used) == ["spark", "postgres"]  # largest first
    assert sampler.cpu_between(104.0, 109.0) == {}  # fewer than two samples: unknown


def test_cpu_report_gives_shares_of_one_core_and_skips_crumbs() -> None:
    report = cpu_report({"spark": 3.0, "kafka": 0.5, "postgres": 0.001}, 2.0)
    assert report == f"spark 150%, kafka 25% (together 175% of one core; {os.cpu_count()} cores)"


def test_cpu_per_trade_in_microseconds_with_a_total_and_no_crumbs() -> None:
    us, line = cpu_per_trade({"spark": 0.095, "postgres": 0.012, "kafka": 0.0000004}, 1000)
    assert us == pytest.approx({"spark": 95.0, "postgres": 12.0, "kafka": 0.0004})
    assert line == "spark 95, postgres 12; together 107"
    assert cpu_per_trade({"spark": 1.0}, 0)[0] == {"spark": 1e6}  # no trades: per one


def test_cpu_seconds_of_this_process_grow_with_work() -> None:
    before = _cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    after = _cpu_seconds(os.getpid())
    assert before is not None and after is not None and after > before
    assert _cpu_seconds(2**22 + 12345) is None  # no such process
