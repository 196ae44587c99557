"""Allow ``python -m cryptoflow``."""

import sys

from cryptoflow.cli import main

sys.exit(main())
