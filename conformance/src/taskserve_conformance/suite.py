"""The whole conformance suite as one class to inherit from.

``AdapterConformance`` combines every test group. An adapter author
subclasses it in a class named ``Test...``, sets ``adapter`` and provides the
``adapter_config`` and ``harness`` fixtures (see :mod:`.plugin`). To run only
some groups, inherit from those groups instead and set the same attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from taskserve_conformance.groups.at_least_once import AtLeastOnceTests
from taskserve_conformance.groups.batching import BatchingTests
from taskserve_conformance.groups.cancel import CancelTests
from taskserve_conformance.groups.capabilities import CapabilityTests
from taskserve_conformance.groups.chaos import ChaosTests
from taskserve_conformance.groups.crash import CrashTests
from taskserve_conformance.groups.dead_letters import DeadLetterTests
from taskserve_conformance.groups.delayed import DelayedTaskTests
from taskserve_conformance.groups.enqueue_status import EnqueueAndStatusTests
from taskserve_conformance.groups.forward_only import ForwardOnlyStatusTests
from taskserve_conformance.groups.graceful_stop import GracefulStopTests
from taskserve_conformance.groups.handler_policy import HandlerPolicyTests
from taskserve_conformance.groups.health_metrics import HealthAndMetricsTests
from taskserve_conformance.groups.listing import TaskListingTests
from taskserve_conformance.groups.payload import PayloadTests
from taskserve_conformance.groups.priorities import PriorityTests
from taskserve_conformance.groups.progress import ProgressTests
from taskserve_conformance.groups.result_ttl import ResultTTLTests
from taskserve_conformance.groups.retry import RetryTests
from taskserve_conformance.groups.retry_task import RetryTaskTests
from taskserve_conformance.groups.time_limits import TimeLimitTests
from taskserve_conformance.groups.webhooks import WebhookTests

TEST_GROUPS: tuple[type, ...] = (
    CapabilityTests,
    HealthAndMetricsTests,
    EnqueueAndStatusTests,
    PayloadTests,
    ForwardOnlyStatusTests,
    AtLeastOnceTests,
    CrashTests,
    GracefulStopTests,
    RetryTests,
    HandlerPolicyTests,
    DeadLetterTests,
    CancelTests,
    ResultTTLTests,
    RetryTaskTests,
    ProgressTests,
    DelayedTaskTests,
    PriorityTests,
    TimeLimitTests,
    BatchingTests,
    TaskListingTests,
    WebhookTests,
    ChaosTests,
)
"""Every test group, in SPEC order; the chaos run last."""


class AdapterConformance(*TEST_GROUPS):  # type: ignore[misc]
    """Every promise of SPEC §3-§5, checked against one adapter and broker.

    Set on the subclass:

    ``adapter``
        The adapter under test: an alias (``"sqlite"``), a dotted path
        (``"pkg.mod:Class"``) or the class.
    ``known_failures``
        Optional ``{"test_name": "reason"}`` of declared gaps. Each becomes a
        strict expected failure: the run fails as soon as the test passes, so
        the entry is removed when the gap is fixed.
    """

    adapter: ClassVar[str | type | None] = None
    known_failures: ClassVar[Mapping[str, str]] = {}
