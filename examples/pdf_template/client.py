"""Client of Ray Serve's async-inference PDF template (its ``client.py`` steps).

The template's code; only the URLs are configuration: ``PDF_API_URL`` (the
Serve application, default ``http://localhost:8000``) and ``PDF_FILES_URL``
(where the PDFs are served; ``run.py`` serves local samples there) replace the
template's Internet addresses.
"""

import os
import time

import requests

BASE_URL = os.environ.get("PDF_API_URL", "http://localhost:8000")
FILES_URL = os.environ.get("PDF_FILES_URL", "http://localhost:8765")


def main() -> int:
    # 1. Submit a PDF processing task
    pdf_url = f"{FILES_URL}/dummy.pdf"  # was: https://www.w3.org/.../dummy.pdf

    response = requests.post(
        f"{BASE_URL}/process", json={"pdf_url": pdf_url, "max_summary_paragraphs": 2}
    )

    task_data = response.json()
    task_id = task_data["task_id"]["id"]

    print("✓ Task submitted!")
    print(f"  Task ID: {task_id}")
    print(f"  Status: {task_data['status']}")

    # 2. Poll for task status (the template runs this cell until it is done)
    for _ in range(100):
        response = requests.get(f"{BASE_URL}/status/{task_id}")
        status_data = response.json()
        if status_data["status"] in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.1)

    print(f"Task status: {status_data['status']}")

    if status_data["status"] == "SUCCESS":
        result = status_data["result"]
        print("\n✓ Complete!")
        print(f"  Pages: {result['page_count']}")
        print(f"  Words: {result['word_count']}")
        print(f"  Time: {result['processing_time_seconds']}s")
    elif status_data["status"] == "FAILURE":
        print(f"\n✗ Failed: {status_data.get('error')}")
    else:
        print(f"  Still processing... (Status: {status_data['status']})")

    # 3. Wait for completion: submit a new task and wait for completion
    pdf_url = f"{FILES_URL}/attention.pdf"  # was: https://arxiv.org/pdf/1706.03762.pdf

    response = requests.post(
        f"{BASE_URL}/process", json={"pdf_url": pdf_url, "max_summary_paragraphs": 3}
    )

    task_id = response.json()["task_id"]["id"]
    print(f"Task submitted: {task_id}\n")

    # Poll until complete
    max_attempts = 40
    for attempt in range(max_attempts):
        response = requests.get(f"{BASE_URL}/status/{task_id}")
        status_data = response.json()

        if status_data["status"] == "SUCCESS":
            result = status_data["result"]
            print("\n✓ Complete!")
            print(f"  Pages: {result['page_count']}")
            print(f"  Words: {result['word_count']}")
            print(f"  Time: {result['processing_time_seconds']}s")
            print("\n  Summary preview:")
            print(f"  {result['summary'][:200]}...")
            return 0
        elif status_data["status"] == "FAILURE":
            print(f"✗ Failed: {status_data.get('error')}")
            return 1
        elif attempt % 5 == 0:
            print(f"  Still processing... ({status_data['status']})")

        time.sleep(0.5)  # the template waits 3 s
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
