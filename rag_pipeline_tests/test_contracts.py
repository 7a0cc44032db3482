"""Contracts reject malformed envelopes and checksum mismatches before anything persists."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag_pipeline.contracts import (
    ContractError,
    ErrorInfo,
    EvidenceText,
    EvidenceVector,
    ModelSpec,
    ResultEnvelope,
    TaskSpec,
    dedupe_key,
)

SPEC = ModelSpec(
    backend="sentence-transformers", model_id="m", revision="r1", weights_checksum="ab" * 32, dim=4
)


def _task(**kw) -> TaskSpec:
    base = dict(
        task_type="mv_embed",
        tenant_id="t",
        asset_id="a" * 64,
        version_id="v1",
        uri="/x/y.md",
        media_type="text/markdown",
        size=10,
        partition_key="00",
        model=SPEC,
        config={"normalize": True},
    )
    return TaskSpec(**(base | kw))


def _envelope() -> ResultEnvelope:
    vec = EvidenceVector.from_array("mv", "chunk:0", np.array([0.5, 0.5, 0.5, 0.5]))
    text = EvidenceText(kind="chunk", ordinal=0, text="hello", confidence=1.0)
    return ResultEnvelope.build(_task(), "run-1", texts=[text], vectors=[vec])


def test_roundtrip_verifies():
    env = _envelope()
    again = ResultEnvelope.parse_verified(env.model_dump_json())
    assert again.result_checksum == env.result_checksum
    assert again.task.dedupe_key == env.task.dedupe_key


def test_tampered_text_fails_checksum():
    raw = json.loads(_envelope().model_dump_json())
    raw["evidence_text"][0]["text"] = "tampered"
    with pytest.raises(ContractError, match="result_checksum mismatch"):
        ResultEnvelope.parse_verified(json.dumps(raw))


def test_tampered_vector_fails_its_own_checksum():
    raw = json.loads(_envelope().model_dump_json())
    raw["evidence_vectors"][0]["vector"][0] = 0.9
    with pytest.raises(ContractError, match="vector checksum mismatch"):
        ResultEnvelope.parse_verified(json.dumps(raw))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(schema_version=99), "unsupported schema_version"),
        (lambda r: r["task"].update(asset_id="not-a-sha"), "asset_id"),
        (lambda r: r.update(status="failed"), "failed result must carry an error"),
        (lambda r: r["evidence_text"][0].update(confidence=1.5), "confidence"),
        (lambda r: r["evidence_text"][0].update(kind="poem"), "kind"),
        (lambda r: r["evidence_vectors"][0].update(dim=5), "dim says 5"),
        (lambda r: r.update(unexpected_field=1), "unexpected_field"),
        (lambda r: r.pop("result_checksum"), "result_checksum"),
    ],
)
def test_malformed_envelopes_are_rejected(mutate, message):
    raw = json.loads(_envelope().model_dump_json())
    mutate(raw)
    with pytest.raises(ContractError, match=message):
        ResultEnvelope.parse_verified(json.dumps(raw))


def test_not_json_is_a_contract_error():
    with pytest.raises(ContractError):
        ResultEnvelope.parse_verified(b"\x00not json")


def test_failed_envelope_carries_error_and_verifies():
    env = ResultEnvelope.build(
        _task(), "run-1", error=ErrorInfo(error_class="CorruptImage", message="bad")
    )
    assert env.status == "failed"
    ResultEnvelope.parse_verified(env.model_dump_json())


def test_dedupe_key_changes_with_each_part():
    base = _task().dedupe_key
    assert _task().dedupe_key == base  # stable
    assert _task(tenant_id="other").dedupe_key != base
    assert _task(asset_id="b" * 64).dedupe_key != base
    assert _task(model=SPEC.model_copy(update={"revision": "r2"})).dedupe_key != base
    assert _task(model=SPEC.model_copy(update={"weights_checksum": "cd" * 32})).dedupe_key != base
    assert _task(task_type="doc_text").dedupe_key != base
    assert _task(config={"normalize": False}).dedupe_key != base
    assert _task(version_id="v2", uri="/moved.md").dedupe_key == base  # content, not path
    assert dedupe_key("t", "a", "m", "x") != dedupe_key("t", "a", "m", "y")


def test_readme_table_of_variables_is_the_settings():
    """Every RAG_* variable is declared once, in Settings; the README shows exactly those."""
    from pathlib import Path

    from rag_pipeline.settings import settings_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- settings-table", 1)[1].split("-->", 1)[1]
    block = block.split("<!-- /settings-table -->", 1)[0].strip()
    assert block == settings_table()


def test_no_module_reads_rag_variables_behind_the_settings():
    """Every RAG_* variable is read through Settings (writing one for a child process is fine)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    reads = re.compile(r'environ(?:\.get\(\s*"(RAG_\w+)"|\[\s*"(RAG_\w+)"\s*\](?!\s*=))')
    found = {}
    for folder in ("rag_pipeline", "serving", "evals", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            names = {a or b for a, b in reads.findall(path.read_text())}
            if names:
                found[str(path.relative_to(root))] = sorted(names)
    assert not found, f"read os.environ directly instead of Settings: {found}"


def test_checkout_dagster_yaml_is_the_packaged_one():
    """`make ui` reads the checkout's dagster.yaml; installed runs the packaged copy."""
    from pathlib import Path

    from rag_pipeline.settings import packaged_file

    checkout = Path(__file__).resolve().parents[1] / "dagster.yaml"
    assert checkout.read_text() == packaged_file("dagster.yaml").read_text()
