"""``python -m bench.consume <engine> <spec>``: the consumer process of a raw
engine or of Ray's adapter. ``<engine>`` names a module of :mod:`bench.engines`
whose ``consume(**spec)`` runs until SIGTERM; ``<spec>`` is a JSON object."""

from __future__ import annotations

import importlib
import json
import logging
import sys


def main(argv: list[str]) -> None:
    """Run ``bench.engines.<engine>.consume(**spec)``."""
    engine, spec = argv
    logging.basicConfig(level=logging.WARNING)
    module = importlib.import_module(f"bench.engines.{engine}")
    module.consume(**json.loads(spec))


if __name__ == "__main__":
    main(sys.argv[1:])
