"""Every example payload in schemas/examples validates, or fails with its stated DLQ reason."""

from __future__ import annotations

from pathlib import Path

import fastjsonschema
import orjson
import pytest

from streams.errors import InvalidEvent
from streams.events import SCHEMA_DIR, decode_record, decode_xp, load_schema, schema_validator
from streams.grant.decide import decode_claim
from streams.policies import Calendar, PolicyError, PolicyVersion

EXAMPLES = SCHEMA_DIR / "examples"


def examples(kind: str, prefix: str) -> list[Path]:
    found = sorted((EXAMPLES / kind).glob(f"{prefix}_*.json"))
    assert found, f"no {kind} examples for {prefix}"
    return found


@pytest.mark.parametrize("path", examples("valid", "xp"), ids=lambda p: p.name)
def test_valid_xp_examples_decode(path: Path) -> None:
    doc = orjson.loads(path.read_bytes())
    docs = doc if isinstance(doc, list) else [doc]
    events = decode_record(docs[0]["student_id"].encode(), path.read_bytes(), 65536)
    assert [e.id for e in events] == [d["id"] for d in docs]


@pytest.mark.parametrize("path", examples("invalid", "xp"), ids=lambda p: p.name)
def test_invalid_xp_examples_give_their_reason(path: Path) -> None:
    case = orjson.loads(path.read_bytes())
    first = case["event"][0] if case["event"] and isinstance(case["event"], list) else case["event"]
    key = (first or {}).get("student_id", "0b7e4c1a-5d2f-4e3b-8a9c-1d2e3f4a5b6c").encode()
    with pytest.raises(InvalidEvent) as info:
        decode_record(key, orjson.dumps(case["event"]), 65536)
    assert info.value.reason == case["reason"]


def test_batch_schema_refers_to_the_event_schema_and_bounds_its_size() -> None:
    batch = load_schema("xp_event_batch.v1.json")
    assert batch["items"] == {"$ref": "xp_event.v1.json"}
    assert (batch["minItems"], batch["maxItems"]) == (1, 500)
    key = b"0b7e4c1a-5d2f-4e3b-8a9c-1d2e3f4a5b6c"
    one = orjson.loads((EXAMPLES / "valid" / "xp_typing.json").read_bytes())
    with pytest.raises(InvalidEvent) as info:
        decode_record(key, orjson.dumps([one] * 501), 1 << 20)
    assert info.value.reason == "schema"
    with pytest.raises(InvalidEvent) as info:
        decode_xp(key, orjson.dumps([one]), 65536)
    assert info.value.reason == "schema"
    assert len(decode_record(key, orjson.dumps([one] * 500), 1 << 20)) == 500


@pytest.mark.parametrize("path", examples("valid", "action"), ids=lambda p: p.name)
def test_valid_action_examples_match_schema(path: Path) -> None:
    fastjsonschema.compile(load_schema("action_event.v1.json"))(orjson.loads(path.read_bytes()))


@pytest.mark.parametrize("path", examples("valid", "claim"), ids=lambda p: p.name)
def test_valid_claim_examples_decode(path: Path) -> None:
    doc = orjson.loads(path.read_bytes())
    claim = decode_claim(doc["student_id"].encode(), path.read_bytes(), 65536, 0, 0, 0)
    assert (claim.id, claim.type) == (doc["id"], doc["type"])


@pytest.mark.parametrize("path", examples("invalid", "claim"), ids=lambda p: p.name)
def test_invalid_claim_examples_give_their_reason(path: Path) -> None:
    case = orjson.loads(path.read_bytes())
    key = case.get("key", case["event"]["student_id"]).encode()
    with pytest.raises(InvalidEvent) as info:
        decode_claim(key, orjson.dumps(case["event"]), 65536, 0, 0, 0)
    assert info.value.reason == case["reason"]


def _policy_record(doc: dict[str, object]) -> None:
    """Validate a policies-topic record as ``streams policy validate`` does."""
    schema_validator("xp_policy.v1.json")(doc)
    if doc["kind"] == "policy":
        PolicyVersion.from_record(doc)
    else:
        Calendar.from_record(doc)


@pytest.mark.parametrize("path", examples("valid", "policy"), ids=lambda p: p.name)
def test_valid_policy_examples_pass_schema_and_rules(path: Path) -> None:
    _policy_record(orjson.loads(path.read_bytes()))


@pytest.mark.parametrize("path", examples("invalid", "policy"), ids=lambda p: p.name)
def test_invalid_policy_examples_fail_where_they_say(path: Path) -> None:
    case = orjson.loads(path.read_bytes())
    error = fastjsonschema.JsonSchemaValueException if case["reason"] == "schema" else PolicyError
    with pytest.raises(error):
        _policy_record(case["event"])
