"""OpenAI-compatible chat-completions endpoints standing in for a vLLM server (which cannot run
here).

``fake_vlm_endpoint``: answers the classify and caption steps from the image's dominant colour,
so a test knows which caption and tags each image must get. The protocol itself is checked in
test_captioning.py; this one only has to be a faithful peer for pipeline runs.

``fake_chat_endpoint``: answers questions for ``POST /v1/ask`` (plain, or ``stream: true``
server-sent chunks ending in ``data: [DONE]``), refuses requests a vLLM server would refuse
(model, messages, max_tokens), records every request body, and notices when the client closes
a stream early (``disconnected``)."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

SERVED_MODEL = "fake/qwen2-vl-tiny"


def dominant_colour(image: Image.Image) -> str:
    r, g, b = image.convert("RGB").resize((1, 1)).getpixel((0, 0))
    if max(r, g, b) - min(r, g, b) < 24:
        return "grey"
    return ("red", "green", "blue")[(r, g, b).index(max(r, g, b))]


def send_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@dataclass
class Endpoint:
    base_url: str = ""
    requests: int = 0
    colours: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(ep: Endpoint):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body: dict) -> None:
            send_json(self, status, body)

        def do_GET(self):
            self._send(200, {"object": "list", "data": [{"id": SERVED_MODEL, "object": "model"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = body["messages"][-1]["content"]
            url = next(p["image_url"]["url"] for p in parts if p.get("type") == "image_url")
            image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            colour = dominant_colour(image)
            schema = body["response_format"]["json_schema"]["schema"]
            with ep.lock:
                ep.requests += 1
                ep.colours.append(colour)
            if "category" in schema.get("properties", {}):
                content = json.dumps({"category": "photo", "confidence": 0.9})
            else:
                content = json.dumps(
                    {
                        "caption": f"A picture in mostly {colour} tones.",
                        "confidence": 0.8,
                        "tags": [
                            {"type": "color", "value": colour, "confidence": 0.9},
                            {"type": "style", "value": "fixture picture", "confidence": 0.6},
                        ],
                    }
                )
            self._send(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": SERVED_MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                },
            )

    return Handler


@contextmanager
def fake_vlm_endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ep))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ep.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield ep
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# Answers: an OpenAI-compatible chat endpoint (a vLLM server's /v1/chat/completions) for
# POST /v1/ask, plain and streamed, that checks what it is sent.

ANSWER_MODEL = "fake/llama-tiny-instruct"
_SOURCE = re.compile(r"^\[(\d+)\] [^\n]*\n<<<\n(.*?)\n>>>", re.DOTALL | re.MULTILINE)


def prompt_sources(body: dict) -> dict[int, str]:
    """The numbered sources quoted in a chat request's user message."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return {int(n): text for n, text in _SOURCE.findall(user)}


def supported_reply(body: dict) -> str:
    """An answer a careful model would give: the source sentence sharing most words with the
    question, cited."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    question = set(re.findall(r"\w+", user.rsplit("Question:", 1)[-1].lower()))
    best = (0, "", 0)
    for n, text in prompt_sources(body).items():
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            score = len(question & set(re.findall(r"\w+", sentence.lower())))
            if score > best[0] and "instructions" not in sentence:
                best = (score, sentence, n)
    return f"{best[1]} [{best[2]}]" if best[1] else "NO_ANSWER"


@dataclass
class ChatEndpoint:
    base_url: str = ""
    reply: Callable[[dict], str] = supported_reply
    chunk_delay_s: float = 0.0  # between streamed chunks
    chunk_words: int = 1  # words per streamed chunk
    bodies: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # requests that broke the protocol
    chunks_sent: int = 0
    disconnected: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _check_chat_request(body: dict) -> str | None:
    """What a vLLM server would refuse (None: a valid request)."""
    if body.get("model") != ANSWER_MODEL:
        return f"model {body.get('model')!r} is not served"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "messages must be a non-empty list"
    if any(m.get("role") not in ("system", "user", "assistant") for m in msgs):
        return "unknown role"
    if not all(isinstance(m.get("content"), str) for m in msgs):
        return "content must be text"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens must be a positive integer"
    return None


def _chat_handler(ep: ChatEndpoint):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with ep.lock:
                ep.bodies.append(body)
            if self.path != "/v1/chat/completions":
                send_json(self, 404, {"error": {"message": "not found"}})
                return
            problem = _check_chat_request(body)
            if problem:
                with ep.lock:
                    ep.errors.append(problem)
                send_json(self, 400, {"error": {"message": problem, "type": "BadRequestError"}})
                return
            text = ep.reply(body)
            if not body.get("stream"):
                send_json(
                    self,
                    200,
                    {
                        "id": "chatcmpl-a1",
                        "object": "chat.completion",
                        "model": ANSWER_MODEL,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                    },
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            words = text.split(" ")
            pieces = [
                " ".join(words[i : i + ep.chunk_words]) + " "
                for i in range(0, len(words), ep.chunk_words)
            ]
            pieces[-1] = pieces[-1].rstrip()
            try:
                for piece in pieces:
                    chunk = {
                        "id": "chatcmpl-a1",
                        "object": "chat.completion.chunk",
                        "model": ANSWER_MODEL,
                        "choices": [{"index": 0, "delta": {"content": piece}}],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    with ep.lock:
                        ep.chunks_sent += 1
                    time.sleep(ep.chunk_delay_s)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                ep.disconnected.set()  # the client went away: stop generating
            self.close_connection = True

    return Handler


@contextmanager
def fake_chat_endpoint(**kw) -> Iterator[ChatEndpoint]:
    """A real HTTP server on a free port speaking ``/v1/chat/completions`` (``stream`` too)."""
    ep = ChatEndpoint(**kw)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _chat_handler(ep))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ep.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield ep
    finally:
        server.shutdown()
        server.server_close()
