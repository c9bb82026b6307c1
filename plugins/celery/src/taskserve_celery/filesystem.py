"""kombu's filesystem transport, with messages that appear whole.

kombu's filesystem transport creates a message file under its final name and
then writes it; a consumer polling the folder in between moves the empty
file away and reads nothing, and the message is gone (the ledger publishes
it again, but only after its claim bound). This transport writes each
message under a hidden name that no queue reads and renames it into place,
which is atomic on one filesystem: a consumer sees either no file or the
whole message. Everything else is kombu's (names, order, folders, sizes).
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


class Channel(filesystem.Channel):
    """A filesystem channel whose messages are renamed into place once written."""

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Write ``payload`` as a hidden file, then rename it to the name
        kombu's consumers look for (milliseconds first, so order holds)."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
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
