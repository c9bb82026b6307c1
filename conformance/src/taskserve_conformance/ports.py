"""Free TCP ports for servers a test starts itself.

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` comes from its
ephemeral range, the same range Ray's processes draw their own ports from and
every outgoing connection takes its local port from: between the moment a test
picks such a port and the moment its server binds it, a Ray starting on the
machine may take it ("Address already in use"). :func:`free_port` picks from
the ports below that range instead, which nothing on the machine hands out.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

PORT_RANGE = (20000, 32767)
"""Where :func:`free_port` looks: above Ray's worker ports (10002 to 19999 by
default), below Linux's default ephemeral range (32768 to 60999)."""
ATTEMPTS = 200
"""Random ports tried before :func:`free_port` gives up."""
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _candidates() -> range:
    low, high = PORT_RANGE
    try:
        ephemeral_low = int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(low, high + 1)
    return range(low, min(high, ephemeral_low - 1) + 1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now and that neither the
    kernel nor Ray hands out to others, so it stays free until the caller's
    server binds it (other tests pick at random from the same range).

    Raises OSError when none of :data:`ATTEMPTS` random ports can be bound.
    """
    candidates = _candidates()
    for port in random.sample(candidates, min(ATTEMPTS, len(candidates))):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free TCP port on {host} in {candidates.start}-{candidates.stop - 1}")
