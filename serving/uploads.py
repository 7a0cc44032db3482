"""Upload routes (``write`` scope): files in, Dagster does the rest (see ``serving.ingest``).

    POST   /v1/documents             multipart, one or more ``files`` parts: stored in the
                                     key's tenant's upload source, one ingest job queued (202)
    GET    /v1/jobs/{job_id}         the job: state, Dagster run id, asset ids, dead letters
    DELETE /v1/documents/{asset_id}  remove an upload; the job that tombstones it (202)

Each file is checked before it is kept: at most ``RAG_UPLOAD_MAX_FILE_BYTES`` (413) and a media
type in ``RAG_UPLOAD_TYPES`` judged from its name *and* its bytes (415). A request is refused
as a whole: a bad file stores nothing of the request.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from rag_pipeline import uploads
from rag_pipeline.media_types import HEAD_BYTES, upload_media_type
from rag_pipeline.settings import Settings
from serving.auth import Caller
from serving.http_errors import ApiError, ErrorBody
from serving.ingest import IngestJob, IngestStore, Received, spool
from serving.ratelimit import limited

log = logging.getLogger("serving.api")

ASSET_ID = r"^[0-9a-f]{64}$"
JOB_ID = r"^job_[0-9a-f]{32}$"
CHUNK = 1 << 20
SNIFF_BYTES = max(HEAD_BYTES, 4096)  # enough to tell text from binary
FORM_OVERHEAD = 1 << 20  # multipart headers and boundaries over the files' bytes


class UploadedFile(BaseModel):
    asset_id: str = Field(description="sha256 of the bytes: the asset's id in this tenant")
    name: str = Field(description="the file name as stored (made safe)")
    size: int
    media_type: str
    duplicate: bool = Field(description="the same bytes were uploaded before: not stored again")
    job_id: str = Field(description="the job that ingests (or ingested) these bytes")


class UploadAccepted(BaseModel):
    job_id: str = Field(
        description="the new job, or the existing one when every file was a duplicate"
    )
    state: str
    run_id: str | None = Field(
        description="the Dagster run id; null while queued (GET /v1/jobs/{id} shows it)"
    )
    duplicate: bool = Field(description="every file was a duplicate: nothing new was queued")
    files: list[UploadedFile]


class JobFile(BaseModel):
    asset_id: str
    name: str
    source: str = Field(description="the tenant's upload source, as hits name it")
    path: str = Field(description="the file's path inside that source")


class JobDeadLetter(BaseModel):
    asset_id: str | None
    name: str
    stage: str
    error_class: str
    message: str


class JobStatus(BaseModel):
    job_id: str
    kind: str = Field(description="upload or delete")
    state: str = Field(description="queued, running, succeeded or failed")
    run_id: str | None = Field(description="the Dagster discovery run that starts the job")
    created_at: datetime | None
    finished_at: datetime | None
    files: list[JobFile]
    asset_ids: list[str] | None = Field(description="once done: the assets the job covers")
    dead_letters: list[JobDeadLetter] | None = Field(
        description="once done: the job's files that could not be read or analysed"
    )
    promoted: bool | None = Field(
        None,
        description="once succeeded: whether the snapshot it published was promoted (false: "
        "the smoke-eval gate kept the previous one, or nothing changed)",
    )
    error: str | None = None


class DeleteAccepted(BaseModel):
    job_id: str
    state: str
    asset_id: str


def _job_status(job: IngestJob) -> JobStatus:
    done = job.state in ("succeeded", "failed")
    source = uploads.upload_source_name(job.tenant)
    return JobStatus(
        job_id=job.job_id,
        kind=job.kind,
        state=job.state,
        run_id=job.run_id,
        created_at=job.created_at,
        finished_at=job.finished_at,
        files=[
            JobFile(asset_id=f["asset_id"], name=f["name"], source=source, path=f["path"])
            for f in job.files
        ],
        asset_ids=sorted({f["asset_id"] for f in job.files}) if done else None,
        dead_letters=[JobDeadLetter(**d) for d in (job.dead_letters or [])] if done else None,
        promoted=job.promoted,
        error=job.error,
    )


def upload_body_bytes(settings: Settings) -> int:
    """The body bound of ``POST /v1/documents``: every file at its limit, plus the form."""
    return settings.upload_max_file_bytes * settings.upload_max_files + FORM_OVERHEAD


def install(app: FastAPI, settings: Settings, store: IngestStore | None) -> None:
    """The upload routes on ``app`` (``store`` None: dev mode without a serving database;
    the routes answer 503)."""
    write = Depends(limited("write"))
    allowed = settings.upload_type_set
    errors: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody} for s in (400, 401, 403, 413, 415, 422, 503)
    }

    def need_store() -> IngestStore:
        if store is None:
            raise ApiError(503, "unavailable", "uploads need the serving database (API keys)")
        return store

    def receive(tenant: str, part: UploadFile) -> Received:
        """Spool one part to disk (a worker thread), checking its size and type."""
        name = uploads.safe_name(part.filename)
        head = part.file.read(SNIFF_BYTES)
        media_type = upload_media_type(name, head)
        if media_type not in allowed:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"{name}: not an accepted type (accepted: {', '.join(sorted(allowed))}; "
                "judged from the name and the bytes)",
            )

        def chunks() -> Any:
            yield head
            while chunk := part.file.read(CHUNK):
                yield chunk

        got = spool(settings, tenant, chunks(), settings.upload_max_file_bytes)
        if got is None:
            raise ApiError(
                413,
                "payload_too_large",
                f"{name}: over {settings.upload_max_file_bytes} bytes (RAG_UPLOAD_MAX_FILE_BYTES)",
            )
        tmp, sha, size = got
        return Received(tmp=tmp, name=name, sha256=sha, size=size, media_type=media_type)

    @app.post(
        "/v1/documents",
        status_code=202,
        response_model=UploadAccepted,
        tags=["ingest"],
        responses={
            200: {"model": UploadAccepted, "description": "every file a duplicate"},
            **errors,
        },
        summary="Upload files to index (write scope; multipart `files` parts)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["files"],
                            "properties": {
                                "files": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                }
                            },
                        }
                    }
                },
            }
        },
    )
    async def upload(request: Request, caller: Caller = write) -> JSONResponse:
        ingest = need_store()
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data")
        try:
            form = await request.form(max_files=settings.upload_max_files, max_fields=16)
        except MultiPartException as exc:
            raise ApiError(400, "invalid_request", f"malformed multipart body: {exc}") from None
        try:
            parts = [v for k, v in form.multi_items() if k == "files"]
            if not parts or not all(isinstance(p, UploadFile) for p in parts):
                raise ApiError(422, "invalid_request", "no files: send them as `files` parts")
            tenant = caller.principal.tenant
            received: list[Received] = []
            try:
                for part in parts:
                    assert isinstance(part, UploadFile)
                    received.append(await anyio.to_thread.run_sync(receive, tenant, part))
                job, stored = await anyio.to_thread.run_sync(
                    lambda: ingest.store_upload(
                        tenant,
                        caller.principal.groups,
                        received,
                        key_id=caller.key_id,
                        request_id=getattr(request.state, "request_id", None),
                    )
                )
            except BaseException:
                for r in received:  # refused as a whole: nothing of the request is kept
                    r.tmp.unlink(missing_ok=True)
                raise
        finally:
            await form.close()
        files = [
            UploadedFile(
                asset_id=f.asset_id,
                name=f.name,
                size=f.size,
                media_type=f.media_type,
                duplicate=f.duplicate,
                job_id=f.job_id or "",
            )
            for f in stored
        ]
        if job is None:  # all seen before: the job that ingested the first one
            existing = await anyio.to_thread.run_sync(ingest.job, files[0].job_id, tenant)
            body = UploadAccepted(
                job_id=files[0].job_id,
                state=existing.state if existing else "succeeded",
                run_id=existing.run_id if existing else None,
                duplicate=True,
                files=files,
            )
            return JSONResponse(body.model_dump(mode="json"), status_code=200)
        log.info("ingest job %s queued: %d files for tenant %s", job.job_id, len(files), tenant)
        body = UploadAccepted(
            job_id=job.job_id, state=job.state, run_id=None, duplicate=False, files=files
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=202)

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobStatus,
        tags=["ingest"],
        responses={s: {"model": ErrorBody} for s in (401, 403, 404, 503)},
        summary="An ingest job: state, Dagster run id, assets and dead letters (write scope)",
    )
    async def get_job(
        job_id: Annotated[str, Path(pattern=JOB_ID)], caller: Caller = write
    ) -> JobStatus:
        ingest = need_store()
        job = await anyio.to_thread.run_sync(ingest.job, job_id, caller.principal.tenant)
        if job is None:
            raise ApiError(404, "not_found", "no such job")
        return _job_status(job)

    @app.delete(
        "/v1/documents/{asset_id}",
        status_code=202,
        response_model=DeleteAccepted,
        tags=["ingest"],
        responses={s: {"model": ErrorBody} for s in (401, 403, 404, 503)},
        summary="Delete an uploaded file; it leaves the next promoted snapshot (write scope)",
    )
    async def delete_document(
        request: Request,
        asset_id: Annotated[str, Path(pattern=ASSET_ID)],
        caller: Caller = write,
    ) -> DeleteAccepted:
        ingest = need_store()
        job = await anyio.to_thread.run_sync(
            lambda: ingest.delete_upload(
                caller.principal.tenant,
                caller.principal.groups,
                asset_id,
                key_id=caller.key_id,
                request_id=getattr(request.state, "request_id", None),
            )
        )
        if job is None:
            raise ApiError(404, "not_found", "no such upload")
        log.info("ingest job %s queued: delete %s", job.job_id, asset_id)
        return DeleteAccepted(job_id=job.job_id, state=job.state, asset_id=asset_id)


__all__ = ["install", "upload_body_bytes"]
