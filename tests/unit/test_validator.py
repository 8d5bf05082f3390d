"""jsonschema-rs and fastjsonschema agree on every schema file (streams.events.SchemaValidator):
a differential hypothesis test over documents near the schemas' edges."""

from __future__ import annotations

from typing import Any

import fastjsonschema
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streams.events import _batch_validator, load_schema

UUIDS = st.one_of(
    st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: str(u)[:-1]), st.uuids().map(lambda u: str(u) + "0"),
    st.uuids().map(lambda u: str(u).replace("-", "")), st.uuids().map(lambda u: f" {u}"),
    st.uuids().map(lambda u: str(u) + "\n"),
)
TIMES = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dt%H:%M:%S.%f+00:00")),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S+00:00")),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%f1Z")),
    st.datetimes().map(lambda d: d.isoformat() + "+0100"),
    st.datetimes().map(lambda d: d.isoformat() + "Z\n"),
)
KINDS = st.one_of(st.sampled_from(["typing", "quiz", "adjustment", "daily_login", "backfill",
                                   "draft_skip", "Quiz", "9quiz", "a" * 32, "a" * 33, "",
                                   "quiz\n", "qu-iz", "ütf"]),
                  st.from_regex(r"[a-z][a-z0-9_]{0,33}", fullmatch=True))
NUMBERS = st.one_of(
    st.integers(min_value=-1_000_002, max_value=1_000_002), st.sampled_from([0, -1, 1, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-2e6, max_value=2e6),
    st.sampled_from([1.0, -1.0, 1e2, 0.5, 1e6, 1e6 + 1, -1e6 - 1, True, False]),
)
ANY = st.recursive(st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20), UUIDS),
                   lambda inner: st.one_of(st.lists(inner, max_size=3),
                                           st.dictionaries(st.text(max_size=8), inner,
                                                           max_size=3)),
                   max_leaves=6)
FIELD_VALUES: dict[str, Any] = {
    "id": st.one_of(UUIDS, ANY), "student_id": st.one_of(UUIDS, ANY),
    "profile_id": st.one_of(UUIDS, ANY), "word_set_id": st.one_of(UUIDS, st.none(), ANY),
    "homework_id": st.one_of(UUIDS, st.none(), ANY), "kind": st.one_of(KINDS, ANY),
    "delta": st.one_of(NUMBERS, ANY), "created_at": st.one_of(TIMES, ANY),
    "selected_at": st.one_of(TIMES, ANY), "completed_at": st.one_of(TIMES, st.none(), ANY),
    "duration": st.one_of(NUMBERS, st.none(), ANY), "action_id": st.one_of(KINDS, ANY),
    "source": st.one_of(KINDS, ANY), "vector": st.one_of(KINDS, ANY),
    "qol_domain": st.one_of(KINDS, st.none(), ANY), "mode": st.one_of(KINDS, st.none(), ANY),
    "metadata": st.one_of(
        st.none(), ANY,
        st.fixed_dictionaries({}, optional={
            "source": st.one_of(st.text(max_size=210), ANY),
            "games_played": st.one_of(NUMBERS, ANY),
            "last_game_type": st.one_of(KINDS, st.none(), ANY),
            "sequence_version": st.one_of(st.text(max_size=5), ANY),
            "reverses": UUIDS})),
    "extra": ANY,
}


VALID_TIMES = st.datetimes(timezones=st.timezones()).map(
    lambda d: d.isoformat(timespec="milliseconds"))
VALID: dict[str, dict[str, Any]] = {
    "xp_event.v1.json": {
        "id": st.uuids().map(str), "student_id": st.uuids().map(str),
        "kind": st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
        "delta": st.integers(min_value=0, max_value=1_000_000), "created_at": VALID_TIMES,
    },
    "action_event.v1.json": {
        "id": st.uuids().map(str), "profile_id": st.uuids().map(str),
        "action_id": st.text(min_size=1, max_size=200), "source": st.text(min_size=1, max_size=100),
        "vector": st.text(min_size=1, max_size=100), "selected_at": VALID_TIMES,
    },
}
DELETE = object()


def documents(schema_name: str) -> st.SearchStrategy[Any]:
    """A valid document with 0 to 3 mutations (a field deleted, or set to a value near its
    rule's edges, an unknown field added); and, rarely, something that is not an object."""
    names = [*load_schema(schema_name)["properties"], "extra"]
    mutation = st.sampled_from(names).flatmap(
        lambda n: st.tuples(st.just(n), st.one_of(st.just(DELETE), FIELD_VALUES[n])))

    def mutate(args: tuple[dict[str, Any], list[tuple[str, Any]]]) -> dict[str, Any]:
        doc, changes = args
        for name, value in changes:
            if value is DELETE:
                doc.pop(name, None)
            else:
                doc[name] = value
        return doc

    valid = st.fixed_dictionaries(VALID[schema_name])
    return st.one_of(st.tuples(valid, st.lists(mutation, max_size=3)).map(mutate), ANY)


def fastjsonschema_accepts(validate: Any, doc: Any) -> bool:
    try:
        validate(doc)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


@pytest.mark.parametrize("name", ["xp_event.v1.json", "action_event.v1.json"])
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_jsonschema_rs_agrees_with_fastjsonschema(name: str, data: st.DataObject) -> None:
    schema = load_schema(name)
    fast, reference = jsonschema_rs.validator_for(schema), fastjsonschema.compile(schema)
    doc = data.draw(documents(name))
    accepted = fast.is_valid(doc)
    assert accepted == fastjsonschema_accepts(reference, doc), doc
    event(accepted)


@settings(max_examples=500, deadline=None)
@given(items=st.one_of(st.lists(st.dictionaries(st.text(max_size=3), ANY, max_size=2),
                                max_size=502), ANY))
def test_the_batch_schema_agrees_too(items: Any) -> None:
    validator = _batch_validator()
    assert validator.fast.is_valid(items) == fastjsonschema_accepts(validator.explain, items)
