"""Runs the PDF template end to end on this machine (its notebook's steps 3 and 4).

Writes sample PDFs and serves them on a local port (instead of downloading
them), starts a local Ray sized for the template's replicas
(``example_ray.py``) and ``serve.run(target=app, blocking=False)`` with
``server.app``, runs ``client.py``, and shuts down::

    python examples/pdf_template/run.py

Serve listens on port ``TASKSERVE_EXAMPLE_PORT`` (default: a free one).
"""

import functools
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
    api_port = int(os.environ.get("TASKSERVE_EXAMPLE_PORT") or free_port())
    os.environ["PDF_FILES_URL"] = f"http://127.0.0.1:{files.server_address[1]}"
    os.environ["PDF_API_URL"] = f"http://127.0.0.1:{api_port}"

    import client
    from example_ray import start_ray, stop_ray
    from server import AsyncPDFAPI, PDFProcessor, app

    from taskserve import serve

    # A local Ray with a logical CPU for each of the template's three replicas
    # (or the cluster of RAY_ADDRESS): example_ray.py.
    start_ray("pdf_template/run.py", PDFProcessor, AsyncPDFAPI)
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": api_port},
            logging_config={"log_level": "WARNING"},
        )
        serve.run(target=app, blocking=False)
        return client.main()
    finally:
        stop_ray("default")
        files.shutdown()


if __name__ == "__main__":
    sys.exit(main())
