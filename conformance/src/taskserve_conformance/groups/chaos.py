"""A bounded chaos run (SPEC §4.1, §4.2): nothing is lost under kills and a broker restart.

Promise checked: with three consumer processes working, producers enqueuing
a thousand tasks, consumers SIGKILLed and replaced every second or two, and
the broker restarted once halfway, every task ends SUCCESS with the right
result; none is lost (never run) or stuck, none leaves a terminal state.
Duplicate runs are allowed by at-least-once delivery and reported in the
run's summary with the rest of the count.

The run uses the test class's ``adapter_config`` and its broker unless the
class sets ``chaos_adapter_config``: an adapter config naming ``{redis_url}``,
``{amqp_url}``, ``{postgres_dsn}`` or ``{workdir}``, for which the run starts
private brokers and restarts the message broker (``chaos_restart``: ``auto``,
``redis``, ``rabbitmq``, ``postgres`` or ``none``). Without it nothing is
restarted, since the shared broker must not be disturbed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import pytest

from taskserve import Capability
from taskserve_conformance.chaos.environment import ChaosEnvironment
from taskserve_conformance.chaos.run import ChaosRun, ChaosSettings
from taskserve_conformance.configs import (
    DEFAULT_SETTINGS,
    ConfigFactory,
    adapter_selector,
    unique_queue_name,
)
from taskserve_conformance.gating import requires
from taskserve_conformance.reporting import CHAOS_PROPERTY

BOUNDED = ChaosSettings(
    tasks=1000,
    consumers=3,
    concurrency=4,
    producers=2,
    work_ms=20.0,
    kill_every_s=(0.5, 1.5),
    min_kills=2,
    max_kills=4,
    stall_s=60.0,
)
"""The bounded run: a thousand tasks, two to four kills, one restart."""


@requires(Capability.CRASH_REDELIVERY)
class ChaosTests:
    """§4.1, §4.2 at scale: 0 lost under SIGKILLs and a broker restart."""

    chaos_adapter_config: ClassVar[Mapping[str, Any] | None] = None
    chaos_restart: ClassVar[str] = "auto"

    def test_no_task_is_lost_under_kills_and_a_broker_restart(
        self,
        request: pytest.FixtureRequest,
        make_config: ConfigFactory,
        config_overrides: Mapping[str, Any],
        tmp_path: Path,
        record_property: Callable[[str, object], None],
    ) -> None:
        timings = {"lease_s": 2.0, "max_retries": 5, **config_overrides}
        if self.chaos_adapter_config is None:
            report = ChaosRun(make_config(**timings), tmp_path / "run", BOUNDED).run()
            restarted = False
        else:
            data = {
                **DEFAULT_SETTINGS,
                **timings,
                "queue_name": unique_queue_name("chaos"),
                "adapter": adapter_selector(request.cls.adapter),
                "adapter_config": self.chaos_adapter_config,
            }
            brokers = tmp_path / "brokers"
            with ChaosEnvironment(data, brokers, restart=self.chaos_restart) as environment:
                broker = environment.restarted
                restart = broker.restart if broker is not None else None
                run = ChaosRun(environment.config(), tmp_path / "run", BOUNDED, restart=restart)
                report = run.run()
            restarted = restart is not None
        record_property(CHAOS_PROPERTY, asdict(report))
        summary = report.line()
        assert report.lost == 0, f"tasks were lost: {report.lost_ids}; {summary}"
        assert report.stuck == 0, f"tasks were stuck: {report.stuck_ids}; {summary}"
        assert report.wrong_results == 0 and report.backward_moves == 0, summary
        assert report.started_early == 0, summary
        assert report.succeeded == report.tasks == BOUNDED.tasks, summary
        assert report.kills >= 1, summary
        assert report.restarts == (1 if restarted else 0), summary
