"""Runs the PDF template end to end on this machine (its notebook's steps 3 and 4).

Writes sample PDFs and serves them on a local port (instead of downloading
them), starts a local Ray and ``serve.run(target=app, blocking=False)`` with
``server.app``, runs ``client.py``, and shuts down::

    python examples/pdf_template/run.py
"""

import functools
import logging
import os
import socket
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # server.py, client.py, example_config.py


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(tempfile.mkdtemp(prefix="taskserve-pdf-"))
    os.environ.setdefault("TASKSERVE_EXAMPLE_SQLITE_PATH", str(work / "tasks.db"))
    from sample_pdf import write_samples

    write_samples(work / "files")
    files = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(work / "files"))
    )
    threading.Thread(target=files.serve_forever, daemon=True).start()
    api_port = free_port()
    os.environ["PDF_FILES_URL"] = f"http://127.0.0.1:{files.server_address[1]}"
    os.environ["PDF_API_URL"] = f"http://127.0.0.1:{api_port}"

    import client
    import ray
    from server import app

    from taskserve import serve

    # Keep the output to this script's own lines: Ray's notice that token
    # authentication is on, and Serve's INFO lines, are not for this demo.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    ray.init(
        num_cpus=max(4, os.cpu_count() or 1),
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": api_port},
            logging_config={"log_level": "WARNING"},
        )
        serve.run(target=app, blocking=False)
        return client.main()
    finally:
        # ray.shutdown() ends Serve with the cluster; serve.shutdown() before it
        # would have the raylet print a line about the controller it kills.
        ray.shutdown()
        files.shutdown()


if __name__ == "__main__":
    sys.exit(main())
