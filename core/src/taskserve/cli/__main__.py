"""``python -m taskserve.cli``: the ``taskserve`` command."""

from __future__ import annotations

import sys

from taskserve.cli import main

if __name__ == "__main__":
    sys.exit(main())
