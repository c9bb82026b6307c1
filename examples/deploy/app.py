"""A task queue service built from a Ray Serve config file: ``build_app(args)``.

``config.yaml`` next to this file names ``app:build_app`` and passes the
queue's :class:`~taskserve.TaskProcessorConfig` in the application's ``args``
(``task_processor_config``: the config's fields, or the path of a YAML file
holding them), so the code and the image stay the same whatever the queue
engine is, and an operator changes the config file only::

    cd examples/deploy && serve run config.yaml    # a local Ray; Ctrl-C stops it
    serve deploy config.yaml                       # a running Ray cluster
    serve run app:build_app task_processor_config=../configs/sqlite.yaml

The application has two deployments: ``DocumentIndexer``, consumer replicas
running the ``index_document`` task, and ``TaskAPI``, taskserve's HTTP
ingress (``POST /submit``, ``GET /status/{id}``, ``GET /get/{id}``,
``POST /cancel/{id}``, ``POST /retry/{id}``, ``GET /health``). The admin
routes (the task listing and the dead letters) are served only when
``TASKSERVE_ADMIN_TOKEN`` is set where the application is built (the Ray
nodes' environment, or ``runtime_env.env_vars`` in the config file), and
then require ``Authorization: Bearer <token>``.

Replica counts and resources below are defaults that fit a 2-CPU machine; a
config file's ``deployments:`` entries override them without a code change.
See docs/deploying.md.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from taskserve import ConfigError, TaskProcessorConfig, current_task
from taskserve.http import HttpSettings, create_task_app
from taskserve.serve import task_consumer, task_handler

CONFIG_ARG = "task_processor_config"
"""The application argument holding the queue's TaskProcessorConfig."""
ADMIN_TOKEN_ENV = "TASKSERVE_ADMIN_TOKEN"
"""Environment variable holding the bearer token of the admin routes."""
TASK_NAMES = ["index_document"]
"""The tasks ``POST /submit`` accepts."""


class DocumentIndexer:
    """The consumer's handlers; its queue is the config's (see :func:`build_app`)."""

    @task_handler(name="index_document")
    def index_document(self, document_id: str, text: str) -> dict[str, Any]:
        """Count the words of ``text`` and name its most frequent terms."""
        task = current_task()
        words = re.findall(r"[a-z']+", text.lower())
        task.report_progress(0.5, "words counted", {"words": len(words)})
        terms = Counter(word for word in words if len(word) > 3).most_common(5)
        return {
            "document_id": document_id,
            "words": len(words),
            "top_terms": [term for term, _ in terms],
            "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16],
        }


class TaskAPI:
    """The HTTP ingress; its routes are taskserve's (``create_task_app``)."""

    def __init__(self, indexer: DeploymentHandle[Any]) -> None:
        # Holding the consumer's handle puts it in the application.
        self.indexer = indexer


def processor_config(args: Mapping[str, Any]) -> TaskProcessorConfig:
    """The TaskProcessorConfig in the application's ``args``.

    Raises ConfigError naming the argument when it is missing or another
    argument is given, and every invalid field of the config.
    """
    unknown = sorted(set(args) - {CONFIG_ARG})
    if CONFIG_ARG not in args or unknown:
        given = ", ".join(repr(name) for name in sorted(args)) or "none"
        raise ConfigError(
            f"the application takes one argument, {CONFIG_ARG!r}: a TaskProcessorConfig "
            f"mapping or the path of a YAML file holding one (arguments given: {given})"
        )
    return TaskProcessorConfig.load(args[CONFIG_ARG])


def build_app(args: dict[str, Any]) -> Application:
    """The application of the config file's ``args`` (Serve calls this)."""
    config = processor_config(args)
    indexer = serve.deployment(
        name="DocumentIndexer",
        num_replicas=2,
        max_ongoing_requests=4,
        ray_actor_options={"num_cpus": 0.5},
        # A stopping replica first waits for its HTTP requests, checking every
        # graceful_shutdown_wait_loop_s (Serve's default: 2 s); a consumer has
        # none, so it starts draining its tasks sooner.
        graceful_shutdown_wait_loop_s=0.5,
    )(task_consumer(task_processor_config=config)(DocumentIndexer))
    token = os.environ.get(ADMIN_TOKEN_ENV) or None
    routes = create_task_app(
        config,
        title="Document indexing",
        task_names=TASK_NAMES,
        settings=HttpSettings(admin_token=token),
        dead_letters=token is not None,
        task_listing=token is not None,
    )
    api = serve.deployment(name="TaskAPI", ray_actor_options={"num_cpus": 0.25})(
        serve.ingress(routes)(TaskAPI)
    )
    return api.bind(indexer.bind())
