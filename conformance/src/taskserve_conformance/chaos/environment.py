"""A chaos run's configuration and the private brokers it names.

A configuration *template* (YAML or JSON text, or a mapping) may name
``{redis_url}``, ``{amqp_url}``, ``{postgres_dsn}`` and ``{workdir}``; each
broker named is started privately for the run (see :mod:`.brokers`), and
the one the run restarts is, by default, the message broker: RabbitMQ if the
template names it, else PostgreSQL, else Redis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from taskserve import TaskProcessorConfig
from taskserve_conformance.chaos.brokers import (
    PrivateBroker,
    PrivatePostgres,
    PrivateRabbitMQ,
    PrivateRedis,
)

BROKERS: dict[str, type[PrivateBroker]] = {
    "amqp_url": PrivateRabbitMQ,
    "postgres_dsn": PrivatePostgres,
    "redis_url": PrivateRedis,
}
"""Placeholders, in the order the default restart picks among them."""


class ChaosEnvironment:
    """Starts the brokers a template names; gives the config and the restart."""

    def __init__(
        self, template: str | Mapping[str, Any], workdir: Path, restart: str | None = "auto"
    ) -> None:
        self.template = template if isinstance(template, str) else json.dumps(dict(template))
        self.workdir = workdir
        self.brokers: dict[str, PrivateBroker] = {}
        self._restart_name = restart

    def __enter__(self) -> ChaosEnvironment:
        try:
            for name, kind in BROKERS.items():
                if "{" + name + "}" in self.template:
                    broker = kind(self.workdir / name)
                    broker.start()
                    self.brokers[name] = broker
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every broker started."""
        for broker in self.brokers.values():
            broker.stop()
        self.brokers.clear()

    def config(self, **overrides: Any) -> TaskProcessorConfig:
        """The template with the brokers' URLs filled in, and ``overrides``."""
        text = self.template.replace("{workdir}", str(self.workdir))
        for name, broker in self.brokers.items():
            text = text.replace("{" + name + "}", broker.url)
        loaded = TaskProcessorConfig.load(text)
        return loaded.model_copy(update=overrides) if overrides else loaded

    @property
    def restarted(self) -> PrivateBroker | None:
        """The broker the run restarts (None: nothing to restart)."""
        if self._restart_name is None or self._restart_name == "none":
            return None
        if self._restart_name != "auto":
            key = {"redis": "redis_url", "rabbitmq": "amqp_url", "postgres": "postgres_dsn"}.get(
                self._restart_name, self._restart_name
            )
            return self.brokers[key]
        return next((self.brokers[n] for n in BROKERS if n in self.brokers), None)
