"""Logging: one line per event, ``key=value`` numbers in the message."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-5s %(name)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("py4j", "urllib3", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
