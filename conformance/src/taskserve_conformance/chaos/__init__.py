"""Chaos runs: many tasks, producers running, consumers SIGKILLed, a broker restart.

A chaos run counts every task at the end: lost (never run, not finished),
stuck (run, not finished), duplicate runs and completions, wrong results,
status moves out of a terminal state, and how long a task interrupted by a
kill took to run again. Consumers are real ``python -m taskserve.worker``
processes whose handler journals every run with ``O_APPEND`` writes that
survive SIGKILL (:mod:`taskserve_conformance.journal`), so the count never
trusts the adapter under test.

Run one against any configuration::

    python -m taskserve_conformance.chaos --config my-config.yaml --tasks 10000

``{redis_url}``, ``{amqp_url}`` and ``{postgres_dsn}`` in the configuration
file are replaced by private, restartable brokers the run starts itself
(persistent Redis with ``appendfsync always``, a RabbitMQ node of its own, a
PostgreSQL cluster of its own), so the broker restart disturbs nothing else.
``taskserve_conformance.groups.chaos`` runs a bounded version in a test suite.
"""

from taskserve_conformance.chaos.run import ChaosReport, ChaosRun, ChaosSettings

__all__ = ["ChaosReport", "ChaosRun", "ChaosSettings"]
