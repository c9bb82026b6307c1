"""kombu's filesystem transport, with messages that appear whole, in priority order.

kombu's filesystem transport creates a message file under its final name and
then writes it; a consumer polling the folder in between moves the empty
file away and reads nothing, and the message is gone (the ledger publishes
it again, but only after its claim bound). This transport writes each
message under a hidden name that no queue reads and renames it into place,
which is atomic on one filesystem: a consumer sees either no file or the
whole message.

kombu's consumers take a queue's files in the order of their names. This
transport names each message after its priority first (:func:`message_name`),
so a free consumer takes the highest priority first, and the oldest message
within a priority. Everything else is kombu's (reading, folders, the queue
suffix of the names, sizes, purges).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

TRANSPORT = f"{__name__}:Transport"
"""What the adapter sets as Celery's ``broker_transport`` for ``filesystem://``."""

NAME_MARK = "+"
"""First character of every message name this transport writes. It sorts before
the digits that kombu's own names start with, so that a message kombu's
transport wrote into the folder (a plain Celery producer) is taken after every
message of this one, as a message of the lowest priority."""

TIME_DIGITS = 20
"""Digits of the monotonic clock (nanoseconds) in a name: the clock's whole
range, zero-padded so that names sort in time order."""


def message_name(queue: str, priority: int, clock_ns: int) -> str:
    """The file name of a message of ``queue`` with kombu priority ``priority``
    (0 to 9, higher first), published at ``clock_ns`` on the monotonic clock.

    ``+``, the inverted priority (``9 - priority``: priority 9 sorts first), the
    clock zero-padded, a random part, then kombu's ``.<queue>.msg`` suffix, by
    which kombu's consumers find a queue's files (the part before the first dot
    has none). Names sort by priority, highest first, then by time."""
    return f"{NAME_MARK}{9 - priority}{clock_ns:0{TIME_DIGITS}d}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
    """A filesystem channel whose messages are renamed into place once written,
    under names in priority order."""

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Write ``payload`` as a hidden file, then rename it to its
        :func:`message_name`, after the priority in its properties (kombu's 0 to
        9, higher first; a message without one has 0). A message handed back
        or restored keeps its properties, and so its priority."""
        priority = self._get_message_priority(payload)  # type: ignore[no-untyped-call]
        name = message_name(str(queue), int(priority), time.monotonic_ns())
        folder = str(self.data_folder_out)
        partial = os.path.join(folder, f".{name}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(dumps(payload).encode())  # type: ignore[no-untyped-call]
            os.replace(partial, os.path.join(folder, name))
        except OSError as e:
            raise ChannelError(f"cannot add message file {name!r} to {folder!r}: {e}") from e


class Transport(filesystem.Transport):
    """kombu's filesystem transport on :class:`Channel`."""

    Channel = Channel
