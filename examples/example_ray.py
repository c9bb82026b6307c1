"""How the example runners start Ray: sized for the deployments they run.

Ray's guide and its PDF template keep Serve's default of one CPU per replica
(two consumer replicas and an ingress: three CPUs), and the examples keep
their decorators as written there. So a runner starts a local Ray with at
least as many *logical* CPUs as the application's replicas ask for: Ray counts
logical CPUs to place replicas and never limits what a process uses, and
these replicas mostly wait on the queue. On a two-core machine the
application therefore starts as the guide wrote it.

With ``RAY_ADDRESS`` set, a runner joins that cluster instead, whose size is
the cluster's own. When a cluster has fewer CPUs than the replicas ask for,
Serve would wait for ever for the replicas that do not fit (and warn every
30 s); the runner says so at once and names what to change.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any

ADDRESS_ENV = "RAY_ADDRESS"
"""Ray's own variable: the address of a running cluster to join."""

SHORT_OF_CPUS_HINT = (
    "Either give Ray more CPUs (`ray start --head --num-cpus={cpus}` and "
    "RAY_ADDRESS=auto), or ask for less per replica: "
    '`ray_actor_options={{"num_cpus": 0.5}}` in `@serve.deployment`, or a '
    "`deployments:` entry of a Serve config file (`serve run "
    "examples/document_indexing_serve.yaml` runs the guide's application so)."
)


def cpus_requested(*deployments: Any) -> tuple[float, str]:
    """The CPUs that every replica of ``deployments`` asks for, and what they are.

    Each deployment counts ``num_replicas`` times its ``num_cpus`` (Serve's
    default: one); an autoscaling one counts one replica.
    """
    total = 0.0
    parts = []
    for deployment in deployments:
        replicas = deployment.num_replicas if isinstance(deployment.num_replicas, int) else 1
        cpus = float((deployment.ray_actor_options or {}).get("num_cpus", 1))
        total += replicas * cpus
        parts.append(f"{replicas} x {deployment.name} at {cpus:g} CPU")
    return total, ", ".join(parts)


def joins_a_cluster() -> bool:
    """Whether the runners join a running cluster (``RAY_ADDRESS``) rather
    than start a Ray of their own."""
    return bool(os.environ.get(ADDRESS_ENV))


def start_ray(name: str, *deployments: Any, log_to_driver: bool = False) -> None:
    """Start a local Ray sized for ``deployments`` (or join ``RAY_ADDRESS``).

    Raises SystemExit with a message naming what to change when the local
    Ray cannot hold every replica (``RAY_OVERRIDE_RESOURCES`` can make it
    smaller); on a cluster joined through ``RAY_ADDRESS``, which may grow,
    the same message is a warning.
    """
    import ray

    # Ray's notice that token authentication is on, and Serve's INFO lines,
    # are not for these demos.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    needed, what = cpus_requested(*deployments)
    joined = joins_a_cluster()
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": log_to_driver}
    if joined:
        ray.init(**options)
    else:
        ray.init(
            num_cpus=max(math.ceil(needed), os.cpu_count() or 1),
            include_dashboard=False,
            **options,
        )
    available = float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
    if available >= needed:
        return
    message = (
        f"{name}: the deployments ask for {needed:g} CPUs ({what}) and this Ray "
        f"cluster has {available:g}; Serve would wait for ever for the replicas that "
        "do not fit. " + SHORT_OF_CPUS_HINT.format(cpus=math.ceil(needed))
    )
    if joined:
        print(f"warning: {message}", file=sys.stderr, flush=True)
        return
    ray.shutdown()
    raise SystemExit(message)


def stop_ray(app_name: str) -> None:
    """The runner's end: on a joined cluster its application is deleted first
    (the cluster goes on); a Ray of its own stops with Serve in it (at once:
    ``serve.shutdown()`` first would only add the raylet's notice about the
    controller it kills)."""
    import ray
    from ray import serve

    if joins_a_cluster():
        serve.delete(app_name)
    ray.shutdown()
