"""Regenerate the settings table in README.md from the code (`cryptoflow config --markdown`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cryptoflow.cli.config import settings_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- settings-table:start -->\n).*?(<!-- settings-table:end -->)", re.S)


def synced(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + settings_markdown() + "\n" + m.group(2), text)


if __name__ == "__main__":
    text = README.read_text()
    new = synced(text)
    if "--check" in sys.argv:
        sys.exit(0 if new == text else "README settings table is stale: run scripts/sync_readme.py")
    README.write_text(new)
