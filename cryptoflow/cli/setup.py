"""``cryptoflow setup``: everything the pipeline needs, idempotently, a progress line per step."""

from __future__ import annotations

import argparse

from cryptoflow.core.config import Settings
from cryptoflow.provision import run_steps


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "setup",
        help="check dependencies, fetch JARs, create data dir, start services, apply schema",
        description=(
            "Prepare everything the pipeline needs; safe to run again. Checks Java and the "
            "Python dependencies, resolves the Spark (Delta, Kafka connector) and Kafka broker "
            "JARs and the Data Docs' JavaScript/CSS WebJars from Maven Central into "
            "CRYPTOFLOW_JAR_CACHE (once; offline afterwards), "
            "creates the data directory, starts the embedded services, applies the SQL "
            "migrations, creates the pipeline and analyst logins and the raw topic. Services "
            "are left running."
        ),
    )
    p.add_argument(
        "--jars-only",
        action="store_true",
        help="only resolve the JARs this configuration needs into CRYPTOFLOW_JAR_CACHE "
        "(for image builds: no services, no schema)",
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    run_steps(settings, jars_only=args.jars_only, progress=lambda line: print(line, flush=True))
    print("setup complete")
    return 0
