"""Silver -> PostgreSQL: new silver rows into ``raw_trades``, quarantined frames into
``quarantine``, in one transaction per batch (see ``pipelines.serving``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptoflow.config import Settings
from cryptoflow.services.postgres import pipeline_dsn
from pipelines.serving import Rows, UpsertSpec, mirror
from pipelines.silver.tables import QUARANTINE_KEY, QUARANTINE_SCHEMA, SILVER_SCHEMA

#: raw_trades = silver's columns minus the partition column; first write of a key wins.
RAW_TRADES = UpsertSpec(
    "raw_trades", tuple(f.name for f in SILVER_SCHEMA.fields[:-1]), ("symbol", "trade_id")
)
QUARANTINE = UpsertSpec("quarantine", tuple(QUARANTINE_SCHEMA.fieldNames()), QUARANTINE_KEY)


def mirror_to_postgres(
    settings: Settings,
    trades: Rows,
    quarantined: Sequence[Sequence[Any]],
    batch_id: int,
) -> dict[str, int]:
    """Upsert one batch's silver rows and quarantine rows; retries per settings."""
    return mirror(
        pipeline_dsn(settings),
        [(RAW_TRADES, trades), (QUARANTINE, quarantined)],
        retry_seconds=settings.mirror_retry_seconds,
        what=f"silver batch {batch_id}",
    )
