"""An OpenAI-compatible chat-completions endpoint standing in for a vLLM server (which cannot run
here): it answers the classify and caption steps from the image's dominant colour, so a test
knows which caption and tags each image must get. The protocol itself is checked in
test_captioning.py; this one only has to be a faithful peer for pipeline runs."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
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
