"""Benchmarks of taskserve: every adapter against its raw engine and Ray's built-in.

``python -m bench`` (``make bench``) runs everything in one go and writes
``bench/RESULTS.md`` and ``bench/throughput.png``; ``--quick`` is a short run.
The benchmarks are never part of the test suite (a smoke test keeps the
harness working).

Modules, one job each:

- :mod:`bench.tasks` - the tasks every system runs;
- :mod:`bench.engines` - one module per system (taskserve's adapters, raw
  Celery, raw Dramatiq, raw RQ, Ray's built-in Celery adapter): its
  producer in this process, the command of its consumer process, and the
  cleanup of what a run created;
- :mod:`bench.runner` - the one runner: N tasks through one system,
  throughput and enqueue-to-SUCCESS-visible latency;
- :mod:`bench.scenarios` - crash-to-redelivery, ``serve.run`` to first
  SUCCESS, the autoscaling comparison, and the scenarios of real use run by
  :mod:`bench.usage_suite`: a producer running, enqueue cost, Redis round
  trips per task, and what is left after the result TTL;
- :mod:`bench.redis_private`, :mod:`bench.redis_monitor`, :mod:`bench.redis_counts`,
  :mod:`bench.isolated`
  - a private Redis to count commands and keys on, and a child process
  running a measurement against it;
- :mod:`bench.report`, :mod:`bench.report_usage`, :mod:`bench.plot`,
  :mod:`bench.machine` - the results.
"""
