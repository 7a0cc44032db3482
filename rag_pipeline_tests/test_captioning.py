"""VLM caption + tags analyzer: strict parsing, evidence, and the three backends.

transformers: a tiny random Qwen2-VL saved to disk and loaded through the real from_pretrained,
processing, batching, dtype and generate code. openai: a real HTTP server on 127.0.0.1 speaking
the chat-completions protocol (and checking what it is sent). vllm: cannot run here (it needs its
own torch and a GPU), so its request building is tested as pure functions.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from pydantic import ValidationError

from rag_pipeline.analysis.analyzers.text_embedding import weights_checksum
from rag_pipeline.analysis.analyzers.vlm import (
    CAPTION_SCHEMA,
    CLASSIFY_SCHEMA,
    DEFAULT_CONFIDENCE,
    PROMPT_VERSION,
    CaptionerConfig,
    CaptionResult,
    ImageClass,
    TokenLogprob,
    content_tags,
    load_captioner,
    parse_caption,
    parse_classification,
    to_evidence,
)
from rag_pipeline.contracts import EvidenceText
from rag_pipeline.errors import (
    AnalysisError,
    VlmOutputInvalid,
    VlmRequestRejected,
    VlmUnavailable,
)
from rag_pipeline_tests.fake_vlm_endpoint import send_json
from rag_pipeline_tests.tiny_vlm import build_tiny_vlm

PHOTO = ImageClass(category="photo", confidence=0.9, confidence_source="model")


def _images() -> list[Image.Image]:
    """Three sizes and modes: different numbers of image tokens, so the batch is padded."""
    return [
        Image.new("RGB", (60, 40), (200, 30, 30)),
        Image.new("RGBA", (30, 100), (20, 40, 220, 128)),
        Image.linear_gradient("L").resize((64, 64)),
    ]


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"category": "photo", "confidence": 0.8}',
        '  \n {"category": "photo", "confidence": 0.8}\n\n',
        '```json\n{"category": "photo", "confidence": 0.8}\n```',
        '```\n{"category": " Photo ", "confidence": 0.8}\n```\n',
    ],
)
def test_classification_accepts_the_json_object_in_a_fence_or_whitespace(raw):
    cls = parse_classification(raw)
    assert (cls.category, cls.confidence, cls.confidence_source) == ("photo", 0.8, "model")


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("", "empty output"),
        ("It is a photo.", "expected a JSON object"),
        ('Sure! {"category": "photo"}', "expected a JSON object"),
        ('{"category": "photo"} I hope that helps', "not valid JSON"),
        ('{"category": "ph', "not valid JSON"),
        ('[{"category": "photo"}]', "expected a JSON object"),
        ('{"category": "photograph"}', "category"),
        ('{"category": "photo", "confidence": 1.5}', "confidence"),
        ('{"category": "photo", "confidence": "high"}', "confidence"),
        ('{"category": "photo", "confidence": NaN}', "NaN"),
        ('{"category": "photo", "category": "diagram"}', "duplicate keys"),
        ('{"category": "photo", "mood": "happy"}', "mood"),
        ('{"confidence": 0.4}', "category"),
    ],
)
def test_classification_rejects_anything_else(raw, problem):
    with pytest.raises(VlmOutputInvalid, match="classify output invalid") as info:
        parse_classification(raw)
    assert problem in str(info.value)
    assert info.value.step == "classify" and info.value.raw == raw
    assert not info.value.retryable  # greedy decoding: asking again gives the same answer


def test_output_invalid_keeps_step_and_raw_across_processes():
    import pickle

    with pytest.raises(VlmOutputInvalid) as info:
        parse_classification("no json here")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (type(copy), str(copy), copy.step, copy.raw) == (
        VlmOutputInvalid,
        str(info.value),
        "classify",
        "no json here",
    )
    assert copy.error_class == "VlmOutputInvalid"


def test_caption_is_normalised_tags_deduped_and_lengths_clamped():
    long_caption = "A very " + "long " * 100 + "caption."
    raw = json.dumps(
        {
            "caption": "  A dog\n runs   on a beach. ",
            "confidence": 0.75,
            "tags": [
                {"type": "object", "value": "Dog", "confidence": 0.6},
                {"type": "Object", "value": " dog. ", "confidence": 0.9},  # same tag, once
                {"type": "other", "value": "dog", "confidence": 0.3},  # another type: kept
                {"type": "scene", "value": "sandy   BEACH", "confidence": 0.8},
                {"type": "text", "value": "...", "confidence": 0.8},  # nothing left: dropped
                {"type": "style", "value": "word " * 20, "confidence": 0.5},
            ],
        }
    )
    res = parse_caption(raw, PHOTO)
    assert res.caption == "A dog runs on a beach."
    assert (res.caption_confidence, res.confidence_source) == (0.75, "model")
    assert (res.category, res.category_confidence) == ("photo", 0.9)
    assert res.prompt_version == PROMPT_VERSION
    assert [(t.type, t.value, t.confidence) for t in res.tags[:3]] == [
        ("object", "dog", 0.9),
        ("other", "dog", 0.3),
        ("scene", "sandy beach", 0.8),
    ]
    style = res.tags[3]
    assert style.type == "style" and len(style.value) <= 40 and style.value.endswith("word")
    assert len(res.tags) == 4

    clamped = parse_caption(json.dumps({"caption": long_caption, "tags": []}), PHOTO)
    assert len(clamped.caption) <= 300 and clamped.caption.endswith("long")


@pytest.mark.parametrize(
    "obj, problem",
    [
        ({"caption": "   ", "tags": []}, "empty caption"),
        ({"caption": "", "tags": []}, "caption"),
        ({"caption": "<sentence>", "tags": []}, "empty caption"),
        (
            {
                "caption": "A cat.",
                "tags": [{"type": "object", "value": f"t{i}"} for i in range(16)],
            },
            "tags",
        ),
        ({"caption": "A cat.", "tags": [{"type": "animal", "value": "cat"}]}, "tags.0.type"),
        ({"caption": "A cat.", "tags": [{"type": "object"}]}, "tags.0.value"),
        ({"caption": "A cat."}, "tags"),
        ({"caption": ["A cat."], "tags": []}, "caption"),
        ({"caption": "A cat.", "tags": [], "confidence": -0.1}, "confidence"),
    ],
)
def test_caption_rejects_what_breaks_the_schema(obj, problem):
    with pytest.raises(VlmOutputInvalid, match="caption output invalid") as info:
        parse_caption(json.dumps(obj), PHOTO)
    assert problem in str(info.value)
    assert info.value.step == "caption"


def _tokens(raw: str, logprob_of) -> list[TokenLogprob]:
    """Split ``raw`` into 3-character tokens, each with ``logprob_of(start offset)``."""
    return [TokenLogprob(raw[i : i + 3], logprob_of(i)) for i in range(0, len(raw), 3)]


def test_confidence_from_token_logprobs_of_the_value_else_the_default():
    raw = '{"caption": "A red kite.", "tags": [{"type": "object", "value": "kite"}]}'
    cap_start, cap_end = raw.index('"A red'), raw.index('kite."') + len('kite."') + 1
    tag_at = raw.index('"kite"')

    # Caption tokens are likely (-0.1), the tag's tokens less so (-1.0), the rest unlikely.
    def lp(i):
        if cap_start - 2 <= i < cap_end:
            return -0.1
        return -1.0 if tag_at - 2 <= i < tag_at + 6 else -5.0

    tokens = _tokens(raw, lp)
    res = parse_caption(raw, PHOTO, tokens)
    caption_tokens = [
        t
        for i, t in zip(range(0, len(raw), 3), tokens, strict=True)
        if i < cap_end and i + 3 > cap_start
    ]
    expected = sum(math.exp(t.logprob) for t in caption_tokens) / len(caption_tokens)
    assert res.confidence_source == "logprobs"
    assert res.caption_confidence == pytest.approx(expected)
    assert 0.8 < res.caption_confidence < 0.91
    assert 0.3 < res.tags[0].confidence < 0.4

    # Tokens that do not spell the output (a backend's detokenisation differs): all tokens.
    odd = [TokenLogprob("x", -0.5)] * 4
    assert parse_caption(raw, PHOTO, odd).caption_confidence == pytest.approx(math.exp(-0.5))
    # No logprobs: the documented default, and it says so.
    res = parse_caption(raw, PHOTO)
    assert (res.caption_confidence, res.confidence_source) == (DEFAULT_CONFIDENCE, "default")
    assert res.tags[0].confidence == DEFAULT_CONFIDENCE

    cls_raw = '{"category": "diagram"}'
    cls = parse_classification(cls_raw, _tokens(cls_raw, lambda i: -0.2))
    assert cls.confidence_source == "logprobs"
    assert cls.confidence == pytest.approx(math.exp(-0.2))


# -- evidence ------------------------------------------------------------------------------------


def test_evidence_and_content_tags():
    res = parse_caption(
        json.dumps(
            {
                "caption": "Two people on a bridge.",
                "confidence": 0.7,
                "tags": [
                    {"type": "person", "value": "people"},
                    {"type": "place", "value": "bridge", "confidence": 0.6},
                ],
            }
        ),
        PHOTO,
    )
    ev = to_evidence(res)
    assert all(isinstance(e, EvidenceText) for e in ev)
    assert [(e.kind, e.ordinal, e.text) for e in ev] == [
        ("caption", 0, "Two people on a bridge."),
        ("tag", 0, "people"),
        ("tag", 1, "bridge"),
    ]
    assert ev[0].confidence == 0.7
    assert ev[0].locator == {
        "category": "photo",
        "category_confidence": 0.9,
        "prompt_version": PROMPT_VERSION,
        "confidence_source": "model",
    }
    assert [e.locator for e in ev[1:]] == [{"tag_type": "person"}, {"tag_type": "place"}]
    assert [e.confidence for e in ev[1:]] == [DEFAULT_CONFIDENCE, 0.6]
    assert content_tags(res) == [("person", "people", DEFAULT_CONFIDENCE), ("place", "bridge", 0.6)]


def test_schemas_are_derived_from_the_answer_models():
    assert CLASSIFY_SCHEMA["required"] == ["category"]
    assert set(CLASSIFY_SCHEMA["properties"]["category"]["enum"]) == {
        "photo",
        "artwork",
        "illustration",
        "document",
        "screenshot",
        "diagram",
        "other",
    }
    assert CAPTION_SCHEMA["additionalProperties"] is False
    assert set(CAPTION_SCHEMA["required"]) == {"caption", "tags"}
    tags = CAPTION_SCHEMA["properties"]["tags"]
    # the decoder's limit is the parser's: maxItems tags parse, one more does not
    limit = tags["maxItems"]
    many = [{"type": "object", "value": f"t{i}"} for i in range(limit + 1)]
    ok = parse_caption(json.dumps({"caption": "A cat.", "tags": many[:limit]}), PHOTO)
    assert len(ok.tags) == limit
    with pytest.raises(VlmOutputInvalid, match="tags"):
        parse_caption(json.dumps({"caption": "A cat.", "tags": many}), PHOTO)
    assert "$ref" not in json.dumps(CAPTION_SCHEMA)  # inlined for every structured decoder
    assert set(tags["items"]["properties"]["type"]["enum"]) >= {"object", "scene", "text"}


def test_config_requires_what_each_backend_needs(tmp_path):
    with pytest.raises(ValidationError, match="model_dir"):
        CaptionerConfig(backend="transformers")
    with pytest.raises(ValidationError, match="base_url"):
        CaptionerConfig(backend="openai", revision="r1")
    with pytest.raises(ValidationError, match="revision"):
        CaptionerConfig(backend="openai", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValidationError, match="device"):
        CaptionerConfig(backend="vllm", model_dir=tmp_path, device="gpu")


# -- transformers: a tiny random Qwen2-VL ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-qwen2-vl")


@pytest.fixture(scope="module")
def tiny_captioner(tiny_vlm_dir):
    return load_captioner(
        CaptionerConfig(
            backend="transformers", model_dir=tiny_vlm_dir, max_new_tokens=16, batch_size=8
        )
    )


def test_transformers_loads_the_model_dir_on_cpu_in_float32(tiny_captioner, tiny_vlm_dir):
    import torch

    cap = tiny_captioner
    assert cap.device == "cpu" and cap.model.dtype == torch.float32
    assert next(cap.model.parameters()).device.type == "cpu"
    checksum = weights_checksum(tiny_vlm_dir)
    assert cap.spec.backend == "transformers" and cap.spec.dtype == "float32"
    assert (cap.spec.weights_checksum, cap.spec.revision) == (checksum, checksum[:12])
    assert load_captioner(cap.config) is cap  # loaded once per process and config


def test_transformers_batch_inputs_expand_each_image_and_pad_left(tiny_captioner):
    from rag_pipeline.analysis.analyzers.vlm.base import prepare_image
    from rag_pipeline.analysis.analyzers.vlm.prompts import classify_messages

    cap = tiny_captioner
    images = [prepare_image(im, 1536) for im in _images()]
    prompt = cap.inputs.render(classify_messages())
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert prompt.endswith("<|im_start|>assistant\n")
    batch = cap.inputs([prompt] * 3, images)
    image_id = cap.model.config.image_token_id
    per_image = (batch["image_grid_thw"].prod(-1) // 4).tolist()
    assert per_image == [2, 4, 4]  # 60x40 -> 28x56 px; 30x100 -> 28x112; 64x64 -> 56x56
    assert (batch["input_ids"] == image_id).sum(1).tolist() == per_image
    assert batch["mm_token_type_ids"].sum(1).tolist() == per_image
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths[0] < lengths[1] == lengths[2]
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # left


def _raw_outputs(results: list) -> list[str]:
    assert all(isinstance(r, VlmOutputInvalid) for r in results), results
    return [r.raw for r in results]


def test_transformers_garbage_becomes_one_error_per_image(tiny_captioner):
    results = tiny_captioner.caption_batch(_images())
    assert len(results) == 3
    raws = _raw_outputs(results)
    # Random weights never say JSON: each image's classify step failed on its own output.
    assert all(r.step == "classify" for r in results)
    assert all(raw for raw in raws), raws  # the model generated for every image


def test_transformers_batched_generation_equals_one_by_one(tiny_captioner):
    batched = _raw_outputs(tiny_captioner.caption_batch(_images()))
    single = [_raw_outputs(tiny_captioner.caption_batch([im]))[0] for im in _images()]
    assert batched == single
    assert len(set(batched)) > 1  # the image matters to what is generated


def test_transformers_bfloat16_override(tiny_vlm_dir):
    import torch

    cap = load_captioner(
        CaptionerConfig(
            backend="transformers", model_dir=tiny_vlm_dir, dtype="bfloat16", max_new_tokens=16
        ),
        cached=False,
    )
    assert cap.model.dtype == torch.bfloat16 and cap.spec.dtype == "bfloat16"
    results = cap.caption_batch(_images()[:2])
    assert [r.step for r in results] == ["classify", "classify"]
    assert all(_raw_outputs(results))


def test_transformers_missing_model_dir_is_unavailable(tmp_path):
    with pytest.raises(VlmUnavailable, match="missing"):
        load_captioner(
            CaptionerConfig(backend="transformers", model_dir=tmp_path / "nope"), cached=False
        )


def test_profile_entry_points(tiny_vlm_dir, tiny_captioner):
    from rag_pipeline.analysis import image_worker
    from rag_pipeline.analysis.analyzers import captioning
    from rag_pipeline.analysis.profiles import ModelRef, Profile, TaskProfile
    from rag_pipeline.errors import ModelMismatch

    spec = captioning.local_model_spec(tiny_vlm_dir, "transformers")
    assert spec.weights_checksum == tiny_captioner.spec.weights_checksum
    assert spec.dtype == "float32"  # the checkpoint's
    with pytest.raises(FileNotFoundError):
        captioning.local_model_spec(tiny_vlm_dir / "nope", "transformers")

    def profile(model_spec):
        return Profile(
            name="tiny-captions",
            analyzer="caption",
            pool="gpu",
            model_dir=tiny_vlm_dir,
            declared=ModelRef(backend="transformers", model_dir=str(tiny_vlm_dir)),
            runtime={"batch_size": 8, "device": "auto"},
            tasks={
                "caption": TaskProfile(
                    "caption",
                    model_spec,
                    {"prompt_version": PROMPT_VERSION, "max_pixels": 10**8, "max_new_tokens": 16},
                )
            },
        )

    assert image_worker.captioner_for_profile(profile(spec)) is tiny_captioner
    other = spec.model_copy(update={"weights_checksum": "0" * 64})
    with pytest.raises(ModelMismatch, match="model_mismatch"):
        image_worker.captioner_for_profile(profile(other))


# -- openai: a real HTTP server speaking the chat-completions protocol ----------------------------

SERVED_MODEL = "Qwen/Qwen2-VL-7B-Instruct"
RED, BLUE, GREEN, YELLOW = (220, 20, 20), (20, 20, 220), (20, 200, 20), (230, 230, 20)


def _colour(rgb) -> str:
    r, g, b = rgb
    if r > 150 and g > 150:
        return "yellow"
    return "red" if r > 150 else "blue" if b > 150 else "green"


def _answer(step: str, colour: str) -> tuple[str, bool]:
    """(content, whether to return logprobs) for a step and an image colour."""
    if step == "classify":
        return {
            "red": ('{"category": "photo", "confidence": 0.9}', False),
            "blue": ('```json\n{"category": "diagram"}\n```', False),
            "green": ("It looks like a photo of grass.", False),
        }[colour]
    return {
        "red": (
            json.dumps(
                {
                    "caption": "A red  square on a plain background.",
                    "tags": [
                        {"type": "color", "value": "Red", "confidence": 0.9},
                        {"type": "object", "value": "square", "confidence": 0.8},
                        {"type": "color", "value": "red.", "confidence": 0.7},
                    ],
                }
            ),
            True,
        ),
        "blue": (
            json.dumps(
                {
                    "caption": "A blue block diagram.",
                    "confidence": 0.6,
                    "tags": [{"type": "color", "value": "blue"}],
                }
            ),
            False,
        ),
    }[colour]


class _Endpoint:
    """State of the fake endpoint: what it was sent and what it should answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.chat_bodies: list[dict] = []
        self.attempts = 0
        self.problems: list[str] = []
        self.fail_next: list[int] = []  # status codes for the next chat requests
        self.always: int | None = None
        self.api_key: str | None = None


def _handler(ep: _Endpoint):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, body: dict) -> None:
            send_json(self, status, body)

        def _problem(self, what: str) -> None:
            with ep.lock:
                ep.problems.append(what)
            self._send(400, {"error": {"message": what, "type": "invalid_request_error"}})

        def do_GET(self):
            if self.path != "/v1/models":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            self._send(200, {"object": "list", "data": [{"id": SERVED_MODEL, "object": "model"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with ep.lock:
                ep.attempts += 1
                status = ep.fail_next.pop(0) if ep.fail_next else ep.always
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if ep.api_key and self.headers.get("Authorization") != f"Bearer {ep.api_key}":
                return self._send(401, {"error": {"message": "bad key"}})
            if status:
                return self._send(status, {"error": {"message": f"scripted {status}"}})
            if body.get("model") != SERVED_MODEL:
                return self._problem(f"model {body.get('model')!r}")
            fmt = body.get("response_format", {})
            schema = fmt.get("json_schema", {}).get("schema", {})
            if fmt.get("type") != "json_schema" or schema not in (CLASSIFY_SCHEMA, CAPTION_SCHEMA):
                return self._problem(f"response_format {fmt!r}")
            if body.get("logprobs") is not True or not isinstance(body.get("max_tokens"), int):
                return self._problem("logprobs/max_tokens")
            msgs = body.get("messages", [])
            if [m.get("role") for m in msgs] != ["system", "user"]:
                return self._problem(f"roles {[m.get('role') for m in msgs]}")
            parts = msgs[1]["content"]
            urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
            texts = [p["text"] for p in parts if p.get("type") == "text"]
            if (
                len(urls) != 1
                or len(texts) != 1
                or not urls[0].startswith("data:image/jpeg;base64,")
            ):
                return self._problem("user content must be one image_url data URL and a text")
            image = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
            if image.format != "JPEG":
                return self._problem(f"image is {image.format}")
            colour = _colour(image.convert("RGB").resize((1, 1)).getpixel((0, 0)))
            step = "classify" if schema == CLASSIFY_SCHEMA else "caption"
            with ep.lock:
                ep.chat_bodies.append(body)
            if colour == "yellow":
                return self._send(400, {"error": {"message": "image rejected"}})
            content, with_logprobs = _answer(step, colour)
            choice = {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
            if with_logprobs:
                choice["logprobs"] = {
                    "content": [
                        {"token": content[i : i + 4], "logprob": -0.2, "top_logprobs": []}
                        for i in range(0, len(content), 4)
                    ]
                }
            self._send(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": SERVED_MODEL,
                    "choices": [choice],
                },
            )

    return Handler


@pytest.fixture
def endpoint():
    ep = _Endpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ep))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ep.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield ep
    server.shutdown()
    server.server_close()


def _openai(ep, **kw) -> CaptionerConfig:
    return CaptionerConfig(
        backend="openai", base_url=ep.base_url, revision="2024-09", retry_backoff_s=0.0, **kw
    )


def test_openai_contract_results_evidence_and_tags(endpoint, monkeypatch):
    monkeypatch.setenv("TEST_VLM_KEY", "sekret")
    endpoint.api_key = "sekret"
    cap = load_captioner(_openai(endpoint, api_key_env="TEST_VLM_KEY", concurrency=3), cached=False)
    assert (cap.spec.backend, cap.spec.model_id, cap.spec.revision) == (
        "openai",
        SERVED_MODEL,
        "2024-09",
    )
    images = [Image.new("RGB", (80, 60), c) for c in (RED, BLUE, GREEN)]
    red, blue, green = cap.caption_batch(images)
    assert endpoint.problems == []

    assert isinstance(red, CaptionResult)
    assert (red.category, red.category_confidence) == ("photo", 0.9)
    assert red.caption == "A red square on a plain background."
    assert red.confidence_source == "logprobs"
    assert red.caption_confidence == pytest.approx(math.exp(-0.2))
    assert content_tags(red) == [("color", "red", 0.9), ("object", "square", 0.8)]
    ev = to_evidence(red)
    assert [(e.kind, e.text) for e in ev] == [
        ("caption", "A red square on a plain background."),
        ("tag", "red"),
        ("tag", "square"),
    ]
    assert ev[0].locator["confidence_source"] == "logprobs"
    assert ev[0].locator["prompt_version"] == PROMPT_VERSION

    assert isinstance(blue, CaptionResult)
    assert (blue.category, blue.category_confidence) == ("diagram", DEFAULT_CONFIDENCE)
    assert (blue.caption_confidence, blue.confidence_source) == (0.6, "model")
    assert content_tags(blue) == [("color", "blue", DEFAULT_CONFIDENCE)]

    assert isinstance(green, VlmOutputInvalid) and green.step == "classify"
    assert "grass" in green.raw
    # 3 classify requests, then captions only for the 2 that classified, each conditioned on
    # its category.
    steps = [b["response_format"]["json_schema"]["name"] for b in endpoint.chat_bodies]
    assert sorted(steps) == ["image_caption"] * 2 + ["image_classify"] * 3
    caption_prompts = {
        b["messages"][1]["content"][1]["text"].split(".")[0]
        for b in endpoint.chat_bodies
        if b["response_format"]["json_schema"]["name"] == "image_caption"
    }
    assert caption_prompts == {"This image is a photo", "This image is a diagram"}


def test_openai_rejected_image_fails_alone(endpoint):
    cap = load_captioner(_openai(endpoint), cached=False)
    red, yellow = cap.caption_batch([Image.new("RGB", (40, 40), c) for c in (RED, YELLOW)])
    assert isinstance(red, CaptionResult)
    assert isinstance(yellow, VlmRequestRejected) and "HTTP 400" in str(yellow)
    assert isinstance(yellow, AnalysisError) and not yellow.retryable


def test_openai_retries_429_and_5xx_then_succeeds(endpoint):
    cap = load_captioner(_openai(endpoint, max_retries=3), cached=False)
    endpoint.fail_next = [429, 503]
    (res,) = cap.caption_batch([Image.new("RGB", (40, 40), RED)])
    assert isinstance(res, CaptionResult) and res.category == "photo"
    assert endpoint.attempts == 4  # 2 refused + classify + caption


def test_openai_500s_until_retries_run_out_is_unavailable(endpoint):
    cap = load_captioner(_openai(endpoint, max_retries=2), cached=False)
    endpoint.always = 500
    with pytest.raises(VlmUnavailable, match=r"no answer after 3 attempts.*HTTP 500") as info:
        cap.caption_batch([Image.new("RGB", (40, 40), RED)])
    assert info.value.retryable
    assert endpoint.attempts == 3


def test_openai_backoff_doubles_honours_retry_after_and_is_capped(endpoint):
    cap = load_captioner(
        _openai(endpoint).model_copy(update={"retry_backoff_s": 1.5}), cached=False
    )
    assert [cap._delay(n, None) for n in (1, 2, 3)] == [1.5, 3.0, 6.0]
    assert cap._delay(1, "7") == 7.0  # the server asks for longer
    assert cap._delay(3, "1") == 6.0  # never shorter than our own backoff
    assert cap._delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 1.5
    assert cap._delay(10, None) == 60.0


def test_openai_connection_refused_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = CaptionerConfig(
        backend="openai",
        base_url=f"http://127.0.0.1:{port}/v1",
        revision="r1",
        max_retries=1,
        retry_backoff_s=0.0,
        timeout_s=5,
    )
    with pytest.raises(VlmUnavailable, match="refused") as info:
        load_captioner(cfg, cached=False)
    assert info.value.retryable


def test_openai_endpoint_setup_errors(endpoint, monkeypatch):
    monkeypatch.delenv("TEST_VLM_MISSING_KEY", raising=False)
    with pytest.raises(VlmUnavailable, match="TEST_VLM_MISSING_KEY"):
        load_captioner(_openai(endpoint, api_key_env="TEST_VLM_MISSING_KEY"), cached=False)
    with pytest.raises(VlmUnavailable, match="does not serve 'other/model'"):
        load_captioner(_openai(endpoint, model="other/model"), cached=False)
    endpoint.api_key = "sekret"  # the endpoint wants a key that we do not send
    cap = load_captioner(_openai(endpoint), cached=False)
    with pytest.raises(VlmUnavailable, match="HTTP 401"):
        cap.caption_batch([Image.new("RGB", (40, 40), RED)])


# -- vllm: request building without vLLM ---------------------------------------------------------


def test_vllm_prompts_requests_and_sampling_params(tiny_vlm_dir):
    from rag_pipeline.analysis.analyzers.vlm.backend_vllm import (
        build_prompts,
        build_requests,
        engine_kwargs,
        sampling_params_dict,
    )
    from rag_pipeline.analysis.analyzers.vlm.local_model import load_tokenizer
    from rag_pipeline.analysis.analyzers.vlm.prompts import (
        CLASSIFY_PROMPT,
        messages_for,
    )

    tok = load_tokenizer(tiny_vlm_dir)
    messages = [messages_for("caption", c) for c in ("photo", "document", "diagram")]
    prompts = build_prompts(tok, messages)
    for prompt, category in zip(prompts, ("photo", "document", "diagram"), strict=True):
        # One unexpanded placeholder per prompt: vLLM expands it to the image's tokens.
        assert prompt.count("<|image_pad|>") == 1
        assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
        assert prompt.startswith("<|im_start|>system\n")
        assert prompt.endswith("<|im_start|>assistant\n")
        assert f"This image is a {category}" in prompt
    assert CLASSIFY_PROMPT in build_prompts(tok, [messages_for("classify")])[0]

    images = _images()
    requests = build_requests(prompts, images)
    assert len(requests) == 3
    for req, prompt, image in zip(requests, prompts, images, strict=True):
        assert req == {"prompt": prompt, "multi_modal_data": {"image": image}}
    with pytest.raises(ValueError):
        build_requests(prompts, images[:2])

    params = sampling_params_dict(CAPTION_SCHEMA, 160)
    assert params == {
        "temperature": 0.0,
        "max_tokens": 160,
        "logprobs": 1,
        "structured_outputs": {"json": CAPTION_SCHEMA},
    }
    json.dumps(params)  # a plain, serialisable dict

    cfg = CaptionerConfig(backend="vllm", model_dir=tiny_vlm_dir, batch_size=16)
    kwargs = engine_kwargs(cfg)
    assert kwargs["model"] == str(tiny_vlm_dir) and kwargs["limit_mm_per_prompt"] == {"image": 1}
    assert kwargs["max_num_seqs"] == 16 and "quantization" not in kwargs
    assert engine_kwargs(cfg.model_copy(update={"quantization": "awq"}))["quantization"] == "awq"


def test_vllm_output_to_generation():
    from rag_pipeline.analysis.analyzers.vlm.backend_vllm import generation_from_output

    # The shape of vLLM's RequestOutput: outputs[0] is a CompletionOutput whose logprobs hold,
    # per position, a {token_id: Logprob} dict that includes the sampled token.
    def lp(value, text):
        return SimpleNamespace(logprob=value, decoded_token=text)

    completion = SimpleNamespace(
        text='{"category": "photo"}',
        token_ids=[7, 8],
        finish_reason="stop",
        logprobs=[{7: lp(-0.1, '{"category": '), 3: lp(-3.0, "x")}, {8: lp(-0.3, '"photo"}')}],
    )
    gen = generation_from_output(SimpleNamespace(outputs=[completion]))
    assert gen.text == '{"category": "photo"}' and gen.finished and gen.n_tokens == 2
    assert gen.token_logprobs == [
        TokenLogprob('{"category": ', -0.1),
        TokenLogprob('"photo"}', -0.3),
    ]
    cls = parse_classification(gen.text, gen.token_logprobs)
    assert cls.confidence == pytest.approx(math.exp(-0.3))
    cut = SimpleNamespace(text='{"cat', token_ids=[1], finish_reason="length", logprobs=None)
    gen = generation_from_output(SimpleNamespace(outputs=[cut]))
    assert not gen.finished and gen.token_logprobs is None


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_backend_without_vllm_says_install_the_gpu_extra(tiny_vlm_dir):
    with pytest.raises(VlmUnavailable, match=r"pip install '\.\[gpu\]'") as info:
        load_captioner(CaptionerConfig(backend="vllm", model_dir=tiny_vlm_dir), cached=False)
    assert info.value.retryable
