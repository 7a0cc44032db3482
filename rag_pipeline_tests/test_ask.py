"""POST /v1/ask over real HTTP (``rag-pipeline serve`` in a subprocess) on the demo index, with
a real OpenAI-compatible endpoint on a free port as its generator: cited extractive answers,
refusals with the closest hits, generated answers checked against their sources, the demo's
prompt-injection document, server-sent events and a client that hangs up mid-stream; then the
nightly eval's golden QA, whose thresholds were calibrated on this corpus."""

from __future__ import annotations

import http.client
import json
import re

import dagster as dg
import pytest

from rag_pipeline_tests.fake_vlm_endpoint import (
    ANSWER_MODEL,
    fake_chat_endpoint,
    prompt_sources,
    supported_reply,
)
from rag_pipeline_tests.http_support import Server, auth, make_key, request

# The first test waits for the session demo index and a server start: minutes on a busy CI box.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HIVE_Q = "How often should I inspect a beehive in spring?"
SWAP_Q = "When is the library's spring seed swap held?"
MAX_TOKENS = 200


@pytest.fixture(scope="module")
def chat():
    with fake_chat_endpoint() as ep:
        yield ep


@pytest.fixture(autouse=True)
def _plain_replies(chat):
    chat.reply, chat.chunk_delay_s, chat.chunk_words = supported_reply, 0.0, 1


@pytest.fixture(scope="module")
def server(built_demo_index, chat, keys, tmp_path_factory):
    # `serve` refuses to start without an API key: the keys come first.
    srv = Server(
        built_demo_index.settings.data_dir,
        tmp_path_factory.mktemp("ask") / "server.log",
        env={
            "RAG_GENERATOR_URL": chat.base_url,
            "RAG_GENERATOR_MODEL": ANSWER_MODEL,
            "RAG_GENERATOR_API_KEY": "sk-generator-secret",
            "RAG_GENERATOR_MAX_TOKENS": str(MAX_TOKENS),
            "RAG_GENERATOR_TIMEOUT_S": "20",
        },
    )
    try:
        srv.wait_live()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def keys(built_demo_index) -> dict[str, str]:
    s = built_demo_index.settings
    return {
        "read": make_key(s, "default", scopes=["read"]),
        "other": make_key(s, "acme", scopes=["read"]),
    }


def ask(server, key: str | None, **body):
    return request(
        f"{server.base}/v1/ask", method="POST", headers=auth(key) if key else {}, body=body
    )


def sse_events(server, key: str, body: dict, headers: dict | None = None):
    """(event, data) pairs of a streamed answer, as they arrive."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(
        "POST",
        "/v1/ask",
        body=json.dumps(body),
        headers={"Content-Type": "application/json", **auth(key), **(headers or {})},
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    event = None
    try:
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event, json.loads(line[6:])
    finally:
        conn.close()


def test_extractive_answer_cites_its_sources(server, keys):
    status, _, body = ask(server, keys["read"], question=HIVE_Q, mode="extractive")
    assert status == 200, body
    assert not body["refused"] and body["mode"] == "extractive" and body["fallback"] is None
    assert "seven to ten days" in body["answer"]
    numbers = {c["n"] for c in body["citations"]}
    assert body["sentences"] and all(set(s["citations"]) <= numbers for s in body["sentences"])
    first = body["citations"][0]
    assert first["path"] == "docs/outdoors/beekeeping.md" and first["section"] == "Inspections"
    assert "seven to ten days" in first["text"] and first["end"] - first["start"] == len(
        first["text"]
    )
    hit_units = [h["unit_id"] for h in body["hits"]]
    assert first["unit_id"] in hit_units and hit_units.index(first["unit_id"]) == first["n"] - 1
    assert re.fullmatch(r"q_[0-9a-f]{32}", body["query_id"]) and body["latency_ms"] > 0
    assert body["snapshot_id"] == built_snapshot(server, keys)
    # The question is query-logged like a search: its id takes feedback.
    status, _, fb = request(
        f"{server.base}/v1/feedback",
        method="POST",
        headers=auth(keys["read"]),
        body={"query_id": body["query_id"], "unit_id": first["unit_id"], "judgement": "relevant"},
    )
    assert status == 201, fb


def built_snapshot(server, keys) -> str:
    status, _, health = request(f"{server.base}/health", headers=auth(keys["read"]))
    return health["snapshot"]["snapshot_id"]


def test_weak_evidence_is_refused_with_the_closest_hits(server, keys, chat):
    n = len(chat.bodies)
    status, _, body = ask(server, keys["read"], question="Who won the 1998 football World Cup?")
    assert status == 200, body
    assert body["refused"] and "not enough evidence" in body["refusal_reason"]
    assert body["hits"] and not body["citations"] and not body["sentences"]
    assert body["evidence_score"] < body["threshold"]
    assert len(chat.bodies) == n, "a refused question must not reach the generator"


def test_access_comes_from_the_key(server, keys):
    assert ask(server, None, question=HIVE_Q)[0] == 401
    assert ask(server, "rag_not_a_key", question=HIVE_Q)[0] == 401
    # Another tenant's key reads none of the demo tenant's documents: nothing to answer from.
    status, _, body = ask(server, keys["other"], question=HIVE_Q, mode="extractive")
    assert status == 200 and body["refused"] and body["hits"] == []
    for bad in (
        {"question": ""},
        {"question": "x" * 1001},
        {"question": HIVE_Q, "k": 51},
        {"question": HIVE_Q, "mode": "creative"},
        {"question": HIVE_Q, "tenant": "acme"},
        {"question": HIVE_Q, "filters": {"kind": "document", "nope": 1}},
    ):
        status, _, err = ask(server, keys["read"], **bad)
        assert status == 422 and err["code"] == "invalid_request", (bad, err)


def test_generated_answer_is_checked_against_its_sources(server, keys, chat):
    status, _, body = ask(server, keys["read"], question=HIVE_Q, filters={"kind": "document"})
    assert status == 200, body
    assert body["mode"] == "generative" and body["fallback"] is None, body
    assert "seven to ten days" in body["answer"] and not body["refused"]
    cited = body["citations"][0]
    assert cited["path"] == "docs/outdoors/beekeeping.md" and "seven to ten days" in cited["text"]
    sent = chat.bodies[-1]
    assert sent["model"] == ANSWER_MODEL and sent["max_tokens"] == MAX_TOKENS
    assert sent["stream"] is False and "data, never instructions" in sent["messages"][0]["content"]
    sources = prompt_sources(sent)
    assert len(sources) == len(body["hits"]) and any(
        "seven to ten days" in t for t in sources.values()
    )
    assert not chat.errors
    # An answer citing a source that does not exist falls back to the extractive one.
    chat.reply = lambda b: "Inspect the hive every seven to ten days [99]."
    status, _, body = ask(server, keys["read"], question=HIVE_Q)
    assert body["mode"] == "extractive" and "do not exist" in body["fallback"]
    assert "seven to ten days" in body["answer"] and "99" not in body["answer"]


def test_the_injection_document_is_quoted_as_data_and_never_followed(server, keys, chat):
    status, _, body = ask(server, keys["read"], question=SWAP_Q, mode="extractive")
    assert status == 200 and "first Saturday of April" in body["answer"]
    assert "PWNED" not in body["answer"] and "cancelled" not in body["answer"]
    for followed in ("PWNED", "PWNED [{n}]", "Sorry, the seed swap has been cancelled [{n}]."):

        def reply(b, followed=followed):
            n = next(k for k, t in prompt_sources(b).items() if "PWNED" in t)
            return followed.format(n=n)

        chat.reply = reply
        status, _, body = ask(server, keys["read"], question=SWAP_Q)
        assert status == 200, body
        assert body["mode"] == "extractive" and body["fallback"], (followed, body)
        assert "PWNED" not in body["answer"] and "cancelled" not in body["answer"]
        assert "first Saturday of April" in body["answer"]
        user = chat.bodies[-1]["messages"][1]["content"]
        # The injection reached the model only inside quoted sources (overlapping chunks may
        # both hold it): every occurrence in the prompt is one inside a source.
        quoted = sum(t.count("PWNED") for t in prompt_sources(chat.bodies[-1]).values())
        assert quoted >= 1 and user.count("PWNED") == quoted


def test_answers_stream_as_server_sent_events(server, keys, chat):
    chat.chunk_words = 2
    body = {"question": HIVE_Q, "stream": True, "filters": {"kind": "document"}}
    events = list(sse_events(server, keys["read"], body))
    kinds = [e for e, _ in events]
    assert kinds[-1] == "answer" and set(kinds[:-1]) == {"token"} and len(kinds) > 3
    final = events[-1][1]
    text = "".join(d["text"] for e, d in events if e == "token")
    assert final["mode"] == "generative" and final["fallback"] is None
    assert "seven to ten days" in text and final["sentences"][0]["text"] in text
    assert chat.bodies[-1]["stream"] is True
    assert re.fullmatch(r"q_[0-9a-f]{32}", final["query_id"])
    # Accept: text/event-stream asks for a stream too; an extractive answer is one event.
    events = list(
        sse_events(
            server,
            keys["read"],
            {"question": HIVE_Q, "mode": "extractive"},
            {"Accept": "text/event-stream"},
        )
    )
    assert [e for e, _ in events] == ["answer"] and "seven to ten days" in events[0][1]["answer"]


def test_a_client_that_hangs_up_stops_the_generation(server, keys, chat):
    total = 300
    chat.reply = lambda b: " ".join(["inspect"] * total) + " [1]"
    chat.chunk_delay_s = 0.05
    chat.disconnected.clear()
    before = chat.chunks_sent
    stream = sse_events(server, keys["read"], {"question": HIVE_Q, "stream": True})
    assert next(stream)[0] == "token"
    stream.close()  # closes the connection
    assert chat.disconnected.wait(20), "the generator kept streaming to nobody"
    assert chat.chunks_sent - before < total
    # The server still answers.
    assert ask(server, keys["read"], question=HIVE_Q, mode="extractive")[0] == 200
    assert "sk-generator-secret" not in server.log()


def test_nightly_eval_scores_the_golden_qa(demo_index, monkeypatch):
    """The golden QA on the demo corpus, through the nightly job: the figures it records are
    those docs/evals.md reports for the calibrated threshold."""
    monkeypatch.setenv("RAG_NIGHTLY_GOLD", str(demo_index.corpus.gold_path))
    monkeypatch.setenv("RAG_NIGHTLY_ENGINES", "hybrid")
    monkeypatch.delenv("RAG_NIGHTLY_QA", raising=False)
    from rag_pipeline.definitions import defs

    with dg.DagsterInstance.get() as instance:
        res = defs.resolve_job_def("nightly_eval_job").execute_in_process(instance=instance)
    assert res.success
    meta = res.asset_materializations_for_node("nightly_eval")[0].metadata
    assert meta["qa_questions"].value == 28 and meta["qa_threshold"].value == 0.55
    assert meta["qa_source_recall"].value >= 0.95
    assert meta["qa_phrase_pass_rate"].value >= 0.9
    assert meta["qa_refusal_precision"].value >= 0.9
    assert meta["qa_refusal_recall"].value >= 0.9
    assert meta["qa_refusal_accuracy"].value >= 0.95
    assert isinstance(meta["ndcg@10"], dg.FloatMetadataValue)
    snap = meta["snapshot_id"].value
    saved = json.loads(
        (demo_index.settings.data_dir / "evals" / "nightly" / f"{snap}-golden_qa.json").read_text()
    )
    rows = {r["qa_id"]: r for r in saved["per_question"]}
    assert all(r["refused"] for r in rows.values() if not r["answerable"])
    assert "PWNED" not in rows["a17"]["answer"] and not rows["a17"]["refused"]
    assert saved["calibration"]["answerable_min"] > 0.55 > saved["calibration"]["unanswerable_max"]
