"""``python -m bench``: run the benchmarks and write the results."""

from bench.cli import main

main()
