"""Server of Ray Serve's async-inference PDF template, on taskserve.

The template's code with only its imports changed, plus configuration: the
adapter config comes from :mod:`example_config` (sqlite by default, any
installed plugin through ``TASKSERVE_EXAMPLE_CONFIG``) instead of a
hard-coded ``CeleryAdapterConfig``. The PDFs are fetched over HTTP as in the
template; ``run.py`` serves local sample files, so nothing leaves the machine.
"""

import time
from io import BytesIO

import requests
from example_config import example_adapter_config  # configuration: which engine
from pypdf import PdfReader
from starlette.requests import Request

from taskserve import TaskID, TaskProcessorConfig, TaskState, serve
from taskserve.serve import TaskAdapter as CeleryAdapter
from taskserve.serve import task_consumer, task_handler

# The imports above replace the template's: `from ray import serve`,
# `from ray.serve.asynchronous_inference import TaskProcessorConfig, TaskID, TaskState`,
# `from ray.serve.task_consumer import task_consumer, task_handler`, its
# `CeleryAdapter`, and `from PyPDF2 import PdfReader` (pypdf is PyPDF2's successor).

# 1. Configure the task adapter (was: CeleryAdapterConfig(broker_url=..., backend_url=...))
adapter_config = example_adapter_config()

TASK_PROCESSOR_CONFIG = TaskProcessorConfig(
    queue_name="pdf_processing_queue",
    adapter_config=adapter_config,
    max_retries=3,
    failed_task_queue_name="failed_pdfs",
    unprocessable_task_queue_name="invalid_pdfs",
)


# 2. The task consumer deployment
@serve.deployment(num_replicas=2, max_ongoing_requests=5)
@task_consumer(
    TaskProcessorConfig(
        queue_name="pdf_processing_queue",
        adapter_config=adapter_config,
        max_retries=3,
    )
)
class PDFProcessor:
    @task_handler(name="process_pdf")
    def process_pdf(self, pdf_url: str, max_summary_paragraphs: int = 3):
        start_time = time.time()

        # Download and process PDF
        response = requests.get(pdf_url)
        pdf_reader = PdfReader(BytesIO(response.content))

        # Extract text from all pages
        full_text = ""
        for page in pdf_reader.pages:
            full_text += page.extract_text()

        # Generate summary (first N paragraphs)
        paragraphs = [p.strip() for p in full_text.split("\n\n") if p.strip()]
        summary = "\n\n".join(paragraphs[:max_summary_paragraphs])

        return {
            "status": "success",
            "page_count": len(pdf_reader.pages),
            "word_count": len(full_text.split()),
            "summary": summary,
            "processing_time_seconds": time.time() - start_time,
        }


# 3. The API ingress deployment
@serve.deployment
class AsyncPDFAPI:
    def __init__(self, pdf_processor_handle):
        self.pdf_processor_handle = pdf_processor_handle
        self.adapter = CeleryAdapter(adapter_config)

    @serve.route("/process", methods=["POST"])
    async def process_pdf(self, request: Request):
        data = await request.json()

        # Enqueue task and immediately return task ID
        task_id = await self.adapter.enqueue_task(
            task_name="process_pdf",
            kwargs={
                "pdf_url": data["pdf_url"],
                "max_summary_paragraphs": data.get("max_summary_paragraphs", 3),
            },
        )

        return {"task_id": task_id.dict(), "status": "PENDING"}

    @serve.route("/status/{task_id}", methods=["GET"])
    async def get_status(self, task_id: str):
        # Check task status in Redis
        status = await self.adapter.get_task_status(TaskID(id=task_id))

        response = {
            "task_id": task_id,
            "status": status.state.value,
        }

        if status.state == TaskState.SUCCESS:
            response["result"] = status.result
        elif status.state == TaskState.FAILURE:
            response["error"] = str(status.result)

        return response


# 4. Bind deployments into an application
pdf_processor = PDFProcessor.bind()

app = AsyncPDFAPI.bind(pdf_processor)
