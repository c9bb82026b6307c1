"""Small text PDFs written from scratch, so the template runs without downloads."""

from __future__ import annotations

from pathlib import Path


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_bytes(pages: list[list[str]]) -> bytes:
    """A PDF with one page per item of ``pages``, each a list of text lines
    (an empty line separates paragraphs)."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for lines in pages:
        content_id = len(objects) + 2
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>".encode()
        )
        ops = ["BT", "/F1 11 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            ops.append(f"({_escape(line)}) Tj T*" if line else "T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


SAMPLES = {
    "dummy.pdf": [["Dummy PDF file"]],
    "attention.pdf": [
        [
            "Attention Is All You Need",
            "",
            "The dominant sequence transduction models are based on complex recurrent",
            "or convolutional neural networks that include an encoder and a decoder.",
            "",
            "We propose a new simple network architecture, the Transformer, based",
            "solely on attention mechanisms, dispensing with recurrence entirely.",
        ],
        [
            "Experiments on two machine translation tasks show these models to be",
            "superior in quality while being more parallelizable.",
            "",
            "The Transformer generalizes well to other tasks.",
        ],
    ],
}


def write_samples(folder: Path) -> list[Path]:
    """Write the sample PDFs into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pages in SAMPLES.items():
        path = folder / name
        path.write_bytes(pdf_bytes(pages))
        paths.append(path)
    return paths
