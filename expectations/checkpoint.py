"""Off-hot-path validation: a Great Expectations checkpoint over a Delta table version.

``run_validation(spark, settings, table, as_of)`` reads a stream kind's silver table or gold
(``SUITE_OF_TABLE``, from the registry) now, at a version, or at a timestamp, validates it
against its suite with a GE checkpoint whose
``UpdateDataDocsAction`` rebuilds the Data Docs under ``<data_dir>/gx`` (then made
self-contained by ``expectations.docs_assets``: no CDN loads), and stores the run's summary
in PostgreSQL ``dq_results`` (``expectations.history``). Parse-level expectations
(``meta.hot_path_only``) are skipped: silver does not keep the columns they read.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import CryptoflowError
from expectations.docs_assets import assets_dir, localize_site
from expectations.history import store_run
from expectations.params import suite_parameters
from expectations.results import ExpectationOutcome, ValidationRun
from expectations.suites import read_suite, resolved_suite
from expectations.tables import SUITE_OF_TABLE
from pipelines.ops.tables import delta_table, read_table

log = logging.getLogger(__name__)

DATASOURCE = "cryptoflow_lake"


def gx_root(settings: Settings) -> Path:
    return (settings.data_dir / "gx").resolve()


def gx_context(settings: Settings):
    """The file-backed GE project under ``<data_dir>/gx`` (created on first use)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = gx_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def table_exists(spark: SparkSession, settings: Settings, table: str) -> bool:
    """Whether the Delta table ``table`` exists yet."""
    return bool(DeltaTable.isDeltaTable(spark, settings.table_path(table)))


def parse_as_of(text: str | None) -> int | datetime | None:
    """``--as-of``: digits are a Delta version, anything else an ISO timestamp (UTC if naive)."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise CryptoflowError(
            f"--as-of {text!r}: expected a Delta version (e.g. 12) or an ISO timestamp "
            "(e.g. 2026-11-26T01:00:00Z)"
        ) from e
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def read_version(
    spark: SparkSession, settings: Settings, table: str, as_of: int | datetime | None
) -> tuple[DataFrame, int]:
    """The table at ``as_of`` (latest when None) and the Delta version that is."""

    commits = delta_table(spark, settings, table).history().select("version", "timestamp")
    if isinstance(as_of, datetime):
        naive_utc = as_of.astimezone(UTC).replace(tzinfo=None)
        commits = commits.where(F.col("timestamp") <= F.lit(naive_utc))
    version = commits.agg(F.max("version")).take(1)[0][0]
    if version is None:
        raise CryptoflowError(f"{table} has no version at or before {as_of}")
    if isinstance(as_of, int):
        version = as_of
    return read_table(spark, settings, table, version), int(version)


def _outcome(result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    res = result.result or {}
    unexpected = res.get("unexpected_count")
    if unexpected is None and isinstance(res.get("observed_value"), int):
        unexpected = res["observed_value"]  # unexpected_rows_expectation: rows the query found
    return ExpectationOutcome(
        rule=config.meta["rule"],
        action=config.meta["action"],
        type=config.type,
        success=bool(result.success),
        evaluated=res.get("element_count"),
        unexpected=unexpected,
        missing=res.get("missing_count"),
    )


def _checkpoint(context, table: str, suite):
    """Datasource, asset, batch definition, suite, validation definition and checkpoint."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_spark(name=DATASOURCE)
    try:
        asset = source.get_asset(table)
    except LookupError:
        asset = source.add_dataframe_asset(name=table)
    try:
        batch = asset.get_batch_definition(f"{table}_snapshot")
    except (KeyError, LookupError):
        batch = asset.add_batch_definition_whole_dataframe(f"{table}_snapshot")
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{table}_validation", data=batch, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{table}_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY"},
        )
    )


def docs_index(context) -> str | None:
    """Filesystem path of the local Data Docs index.html."""
    for site in context.get_docs_sites_urls():
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            return url[len("file://") :]
    return None


def fix_favicon(index: str | None) -> None:
    """GE 1.24 links validation pages' favicon one directory too shallow
    (``validations/static/images``): put a copy there so the pages load without a 404."""
    if not index:
        return
    site = Path(index).parent
    icon = site / "static" / "images" / "favicon.ico"
    target = site / "validations" / "static" / "images" / "favicon.ico"
    if icon.is_file() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(icon, target)


def finish_docs(index: str | None, settings: Settings) -> None:
    """Make the site just built work offline: the favicon fix, then the vendored assets and
    local URLs. Data Docs are a by-product: a failure here is a warning, never a failed run."""
    if not index:
        return
    try:
        fix_favicon(index)
        localize_site(Path(index).parent, assets_dir(settings.jar_cache))
    except Exception as e:  # noqa: BLE001 - the validation result stands without its docs
        log.warning("Data Docs: could not make the site at %s self-contained: %s", index, e)


def run_validation(
    spark: SparkSession,
    settings: Settings,
    table: str,
    as_of: int | str | datetime | None = None,
    store: bool = True,
) -> ValidationRun:
    """Validate ``table`` (a key of ``SUITE_OF_TABLE``) at ``as_of``; build Data Docs; store
    the summary."""
    from great_expectations.core.run_identifier import RunIdentifier

    if table not in SUITE_OF_TABLE:
        raise CryptoflowError(f"table {table!r}: validate one of {', '.join(SUITE_OF_TABLE)}")
    point = parse_as_of(as_of) if isinstance(as_of, str) else as_of
    started = datetime.now(UTC)
    t0 = time.monotonic()
    df, version = read_version(spark, settings, table, point)
    df = df.persist()  # GE computes each metric as its own Spark job: read the files once
    rows = df.count()
    suite = resolved_suite(
        read_suite(SUITE_OF_TABLE[table]),
        suite_parameters(settings, now=started),
        keep=lambda e: not e.meta.get("hot_path_only"),
    )
    context = gx_context(settings)
    checkpoint = _checkpoint(context, table, suite)
    run_id = str(uuid.uuid4())
    try:
        result = checkpoint.run(
            batch_parameters={"dataframe": df},
            run_id=RunIdentifier(run_name=f"{table}-v{version}-{run_id[:8]}", run_time=started),
        )
    finally:
        df.unpersist()
    outcomes = [_outcome(r) for vr in result.run_results.values() for r in vr.results]
    run = ValidationRun(
        run_id=run_id,
        table=table,
        suite=suite.name,
        delta_version=version,
        as_of=None if as_of is None else str(as_of),
        success=bool(result.success),
        rows=rows,
        started_at=started,
        duration_ms=int((time.monotonic() - t0) * 1000),
        docs_index=docs_index(context),
        outcomes=outcomes,
    )
    finish_docs(run.docs_index, settings)
    log.info(
        "validation table=%s version=%d rows=%d success=%s evaluated=%d failed=%d duration_ms=%d",
        table, version, rows, run.success, run.evaluated, len(run.failed), run.duration_ms,
    )  # fmt: skip
    if store:
        store_run(settings, run)
    return run
