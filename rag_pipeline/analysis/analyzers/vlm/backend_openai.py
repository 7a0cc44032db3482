"""Any OpenAI-compatible chat-completions endpoint (a vLLM server, say), over stdlib HTTP.

Requests carry the image as a JPEG data URL, ask for the step's JSON schema through
``response_format`` and for token log-probabilities. 408, 429 and 5xx answers, timeouts and
refused connections are retried with exponential backoff (at least Retry-After when the server
sends one); when retries run out the whole batch fails with ``VlmUnavailable`` (retryable). Any
other 4xx is about that one request: ``VlmRequestRejected`` for that image, except 401/403/404,
which mean the endpoint, key or model is wrong for every image (``VlmUnavailable``). Requests
of a batch run concurrently on a small thread pool (``concurrency``).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from rag_pipeline.analysis.analyzers.vlm.base import (
    Generation,
    GenerationRequest,
    TwoStepCaptioner,
)
from rag_pipeline.analysis.analyzers.vlm.config import CaptionerConfig
from rag_pipeline.analysis.analyzers.vlm.parsing import RAW_CLAMP, TokenLogprob
from rag_pipeline.analysis.analyzers.vlm.prompts import Messages
from rag_pipeline.analysis.analyzers.vlm.schema import Step
from rag_pipeline.contracts import ModelSpec
from rag_pipeline.errors import (
    AnalysisError,
    VlmOutputInvalid,
    VlmRequestRejected,
    VlmUnavailable,
)

MAX_BACKOFF_S = 60.0
RETRY_STATUS = {408, 429}  # and every 5xx
JPEG_QUALITY = 90


def jpeg_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def openai_messages(messages: Messages, image: Image.Image) -> list[dict[str, Any]]:
    """The prompt's messages with the image part as an ``image_url`` data URL."""
    url = jpeg_data_url(image)
    out = []
    for msg in messages:
        parts = [
            {"type": "image_url", "image_url": {"url": url}} if p["type"] == "image" else p
            for p in msg["content"]
        ]
        out.append({"role": msg["role"], "content": parts})
    return out


def chat_request_body(
    model: str,
    messages: Messages,
    image: Image.Image,
    step: Step,
    schema: dict[str, Any],
    max_new_tokens: int,
) -> dict[str, Any]:
    return {
        "model": model,
        "messages": openai_messages(messages, image),
        "max_tokens": max_new_tokens,
        "temperature": 0.0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": f"image_{step}",
                "schema": schema,
                # strict mode requires every property to be required; ours are optional on purpose
                # (a missing confidence is derived from logprobs).
                "strict": False,
            },
        },
        "logprobs": True,
    }


def generation_from_response(body: dict[str, Any], step: Step) -> Generation:
    """Text, token logprobs and finish state of a chat completion."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("message content is not a string")
    except (KeyError, IndexError, TypeError) as exc:
        raw = json.dumps(body)[:RAW_CLAMP]
        raise VlmOutputInvalid(
            f"{step}: malformed chat completion ({exc!r})", step=step, raw=raw
        ) from None
    tokens = None
    content = (choice.get("logprobs") or {}).get("content")
    if isinstance(content, list) and content:
        try:
            tokens = [TokenLogprob(str(t["token"]), float(t["logprob"])) for t in content]
        except (KeyError, TypeError, ValueError):
            tokens = None  # logprobs are optional: fall back to the default confidence
    return Generation(
        text=text,
        token_logprobs=tokens,
        n_tokens=len(tokens) if tokens else 0,
        finished=choice.get("finish_reason") != "length",
    )


class OpenAICaptioner(TwoStepCaptioner):
    def __init__(self, config: CaptionerConfig):
        self.config = config
        if not config.base_url:
            raise VlmUnavailable("no endpoint configured for the openai backend (base_url)")
        self.base_url = config.base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise VlmUnavailable(
                    f"environment variable {config.api_key_env} (api_key_env) is not set"
                )
            self._headers["Authorization"] = f"Bearer {key}"
        self.model = self._served_model()
        self._spec = ModelSpec(backend="openai", model_id=self.model, revision=config.revision)

    # -- transport ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        last, retry_after = "", None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            retry_after = None
            req = urllib.request.Request(url, data=data, headers=self._headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code in RETRY_STATUS or exc.code >= 500:
                    last = f"HTTP {exc.code}: {detail}"
                    retry_after = exc.headers.get("Retry-After") if exc.headers else None
                    continue
                if exc.code in (401, 403, 404):
                    raise VlmUnavailable(f"{method} {url}: HTTP {exc.code}: {detail}") from None
                raise VlmRequestRejected(f"{method} {url}: HTTP {exc.code}: {detail}") from None
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,
            ) as exc:  # refused, timed out, cut off
                last = str(getattr(exc, "reason", exc)) or type(exc).__name__
            except json.JSONDecodeError as exc:
                raise VlmUnavailable(f"{method} {url}: answered with non-JSON ({exc})") from None
        raise VlmUnavailable(
            f"{method} {url}: no answer after {self.config.max_retries + 1} attempts; last: {last}"
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.config.retry_backoff_s * 2 ** (attempt - 1)
        try:
            if retry_after is not None and math.isfinite(float(retry_after)):
                delay = max(delay, float(retry_after))
        except ValueError:
            pass  # an HTTP date: keep our own backoff
        return min(delay, MAX_BACKOFF_S)

    def _served_model(self) -> str:
        listing = self._request("GET", "/models")
        try:
            served = [str(m["id"]) for m in listing["data"]]
        except (KeyError, TypeError) as exc:
            raise VlmUnavailable(f"{self.base_url}/models: unexpected answer ({exc!r})") from None
        if self.config.model:
            if self.config.model not in served:
                raise VlmUnavailable(
                    f"{self.base_url} does not serve {self.config.model!r}; it serves {served}"
                )
            return self.config.model
        if len(served) != 1:
            raise VlmUnavailable(f"{self.base_url} serves {served}: set model in the config")
        return served[0]

    # -- generation ---------------------------------------------------------------------------

    def _one(
        self, step: Step, schema: dict[str, Any], request: GenerationRequest
    ) -> Generation | AnalysisError:
        body = chat_request_body(
            self.model, request.messages, request.image, step, schema, self.config.max_new_tokens
        )
        try:
            return generation_from_response(self._request("POST", "/chat/completions", body), step)
        except (VlmRequestRejected, VlmOutputInvalid) as exc:
            return exc

    def _generate(
        self, step: Step, schema: dict[str, Any], requests: list[GenerationRequest]
    ) -> list[Generation | AnalysisError]:
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(requests))) as pool:
            futures = [pool.submit(self._one, step, schema, r) for r in requests]
            # VlmUnavailable (endpoint down) propagates from result(): the batch fails.
            return [f.result() for f in futures]


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read().decode("utf-8", "replace")[:300]
    except Exception:  # the body is only for the message
        return exc.reason or ""
