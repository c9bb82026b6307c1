"""One module per benchmarked system.

Each gives a :class:`~bench.engines.base.Trial`: a producer on a fresh queue
in this process, the command of its consumer process, and the cleanup of
what the run created on the broker. Raw engines and Ray's adapter also
define ``consume(...)``, the main of their consumer process
(``python -m bench.consume``).
"""
