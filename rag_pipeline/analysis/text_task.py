"""One file's text analysis (document text + chunks, or image metadata), as the parser child
process runs it: read and verify the bytes, analyse them under the per-file caps."""

from __future__ import annotations

from pathlib import Path

from rag_pipeline.analysis.analyzers.doc_text import analyze_document
from rag_pipeline.analysis.analyzers.image_metadata import analyze_image
from rag_pipeline.analysis.limits import ParseLimits
from rag_pipeline.analysis.task_inputs import read_verified
from rag_pipeline.contracts import EvidenceText, TaskSpec
from rag_pipeline.discovery.scanner import sidecar_bytes
from rag_pipeline.storage.faults import hang_point


def analyze_text_task(
    task: TaskSpec, limits: ParseLimits, fault: str | None = None
) -> list[EvidenceText]:
    data = read_verified(task)
    hang_point(fault, "parse", Path(task.uri).name)
    if task.task_type == "doc_text":
        return analyze_document(
            data,
            task.media_type,
            Path(task.uri).name,
            chunk_tokens=int(task.config["chunk_tokens"]),
            chunk_overlap=int(task.config["chunk_overlap"]),
            max_chars=limits.max_text_chars,
            max_chunks=limits.max_chunks,
        )
    analysis = analyze_image(
        data, sidecar_bytes(Path(task.uri)), max_pixels=int(task.config["max_pixels"])
    )
    return analysis.evidence
