"""Sync protocol: the validator against real store payloads, and the client's pure helpers."""

from __future__ import annotations

import copy
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from fieldlog_app.database import Store, canonical_json, payload_sha256
from fieldlog_app.sync.common import RetryPolicy, parse_retry_after, resolve_config, SyncConfigError
from fieldlog_app.sync.protocol import ProtocolError, parse_json, validate_batch, validate_item
from fieldlog_app.sync.testing import make_sightings


@pytest.fixture(scope="module")
def wire_items():
    """Items exactly as the client would send them, from a real Store (sighting, revision, report)."""
    store = Store(":memory:")
    sid = make_sightings(store, 1, seed=3)[0]
    new = store.revise(sid, {"notes": "second look"})
    store.save_report(new, text="Summary: ok", model_pair={"oracle": "x"}, policy={}, stats={"tokens": 3},
                      provenance=[{"t": 1}], spans=[], findings=[])
    items = [{"item_id": r["item_id"], "kind": r["kind"], "replaces": r["replaces"], "sha256": r["sha256"],
              "payload": json.loads(r["payload"])} for r in store.outbox_items()]
    store.close()
    assert [i["kind"] for i in items] == ["sighting", "sighting", "report"]
    return items


def batch(items):
    return {"protocol": 1, "batch_id": str(uuid.uuid4()), "items": items}


def test_store_payloads_validate_and_hash_round_trips(wire_items):
    batch_id, items = validate_batch(json.loads(json.dumps(batch(wire_items))))
    assert [i.item_id for i in items] == [w["item_id"] for w in wire_items]
    for item, w in zip(items, wire_items):
        assert payload_sha256(item.payload) == w["sha256"]
        assert item.payload_json == canonical_json(w["payload"])
    assert items[1].replaces == items[0].item_id and items[1].version == 2


@pytest.mark.parametrize("mutate, field, words", [
    (lambda i: i["payload"]["observations"][0].__setitem__("sampled", "50"), "observations[0].sampled", "integer"),
    (lambda i: i["payload"]["observations"][0].__setitem__("sampled", True), "observations[0].sampled", "integer"),
    (lambda i: i["payload"].__setitem__("lat", 123.0), "payload.lat", "out of range"),
    (lambda i: i["payload"].__setitem__("block", 7), "payload.block", "string"),
    (lambda i: i["payload"].__setitem__("date", "21/07/2026"), "payload.date", "ISO date"),
    (lambda i: i["payload"].__setitem__("colour", "red"), "payload.colour", "unknown field"),
    (lambda i: i["payload"].__setitem__("risk_class", "extreme"), "payload.risk_class",
     "not one of low, intermediate, high"),
    (lambda i: i["payload"].__setitem__("risk_class", "High"), "payload.risk_class", "lower case"),
    (lambda i: i["payload"].__setitem__("risk_class", ""), "payload.risk_class", "leave it out"),
    (lambda i: i["payload"].__setitem__("risk_class", 3), "payload.risk_class", "string"),
    (lambda i: i["payload"].__setitem__("id", str(uuid.uuid4())), "payload.id", "differs"),
    (lambda i: i.__setitem__("item_id", i["item_id"].upper()), "item_id", "canonical"),
    (lambda i: i.__setitem__("kind", "photo"), "kind", "not one of"),
    (lambda i: i.__setitem__("sha256", "0" * 64), "sha256", "does not match"),
    (lambda i: i.__setitem__("payload", [1, 2]), "payload", "expected an object"),
    (lambda i: i.pop("sha256"), "sha256", "required"),
])
def test_bad_items_are_named_precisely(wire_items, mutate, field, words):
    item = copy.deepcopy(wire_items[0])
    mutate(item)
    good = copy.deepcopy(wire_items[2])
    with pytest.raises(ProtocolError) as ei:
        validate_batch(batch([good, item]))
    e = ei.value
    assert e.status == 422
    assert all(err["index"] == 1 for err in e.errors), e.errors
    assert any(field in err["field"] and words in err["message"] for err in e.errors), e.errors


def test_a_risk_class_from_the_store_validates():
    store = Store(":memory:")
    sid = make_sightings(store, 1, seed=4)[0]
    store.revise(sid, {"risk_class": "Intermediate"})
    rows = store.outbox_items()
    store.close()
    items = [{"item_id": r["item_id"], "kind": r["kind"], "replaces": r["replaces"], "sha256": r["sha256"],
              "payload": json.loads(r["payload"])} for r in rows]
    _, got = validate_batch(batch(items))
    assert "risk_class" not in got[0].payload and got[1].payload["risk_class"] == "intermediate"


def test_infested_above_sampled_is_rejected_by_the_device_rules(wire_items):
    item = copy.deepcopy(wire_items[0])
    o = item["payload"]["observations"][0]
    o["infested"] = o["sampled"] + 1
    item["sha256"] = payload_sha256(item["payload"])
    _, errs = validate_item(item, 0)
    assert errs and "infested" in errs[0]["field"] and "out of range" in errs[0]["message"]


def test_report_may_not_replace_and_revision_must_name_its_base(wire_items):
    rep = copy.deepcopy(wire_items[2])
    rep["replaces"] = wire_items[0]["item_id"]
    _, errs = validate_item(rep, 0)
    assert any("never replaces" in e["message"] for e in errs)
    rev = copy.deepcopy(wire_items[1])
    rev["replaces"] = None
    rev["payload"]["replaces"] = None
    rev["sha256"] = payload_sha256(rev["payload"])
    _, errs = validate_item(rev, 0)
    assert any("version" in e["field"] for e in errs), errs


@pytest.mark.parametrize("body, words", [
    (b"{not json", "malformed JSON"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": 1e400}', "out of range"),
    (b"\xff\xfe", "UTF-8"),
    (b"[" * 100_000, "nested"),
])
def test_unparseable_bodies_are_400(body, words):
    with pytest.raises(ProtocolError) as ei:
        parse_json(body)
    assert ei.value.status == 400 and words in ei.value.message


@pytest.mark.parametrize("obj, words", [
    ([], "JSON object"),
    ({"protocol": 2, "items": [{}]}, "protocol"),
    ({"protocol": 1, "items": []}, "empty"),
    ({"protocol": 1, "items": "x"}, "array"),
    ({"protocol": 1, "items": [{}] * 3}, "too many"),
])
def test_batch_envelope_errors(obj, words):
    with pytest.raises(ProtocolError) as ei:
        validate_batch(obj, max_items=2)
    assert words in ei.value.message


def test_full_jitter_backoff_is_bounded_and_grows():
    policy = RetryPolicy(base=0.5, cap=4.0)
    rng = random.Random(7)
    for retry in range(10):
        bound = min(4.0, 0.5 * 2 ** retry)
        waits = [policy.delay(retry, rng) for _ in range(200)]
        assert all(0.0 <= w <= bound for w in waits)
        assert max(waits) > 0.8 * bound  # really spread over the whole interval (full jitter)


def test_retry_after_seconds_and_http_date():
    now = datetime(2026, 7, 21, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == pytest.approx(90)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_config_from_env(monkeypatch):
    monkeypatch.setenv("FIELDLOG_SERVER", "http://office:8765/")
    monkeypatch.setenv("FIELDLOG_TOKEN", "fl_x")
    assert resolve_config() == ("http://office:8765", "fl_x")
    assert resolve_config("https://other", "t2") == ("https://other", "t2")
    monkeypatch.delenv("FIELDLOG_TOKEN")
    with pytest.raises(SyncConfigError, match="token"):
        resolve_config()
    with pytest.raises(SyncConfigError, match="http"):
        resolve_config("ftp://office", "t")


def _wire(rows):
    return [{"item_id": r["item_id"], "kind": r["kind"], "replaces": r["replaces"], "sha256": r["sha256"],
             "payload": json.loads(r["payload"])} for r in rows]


def test_a_nothing_found_walk_validates_and_a_legacy_backwards_rows_field_still_syncs(wire_items):
    store = Store(":memory:")
    sid = store.finalize(store.save_draft({"block": "B4", "rows": "1-10", "date": "2026-07-21", "observations": []}))
    [item] = _wire(store.outbox_items())
    store.close()
    _, got = validate_batch(batch([item]))
    assert got[0].item_id == sid and got[0].payload["observations"] == []
    # an older app finalized rows "20-5" before the rule existed: the office must still take it
    old = copy.deepcopy(wire_items[0])
    old["payload"]["rows"] = "20-5"
    old["sha256"] = payload_sha256(old["payload"])
    assert validate_item(old, 0)[1] == []
    # but "observations" stays required: leaving the key out is not "nothing found"
    gone = copy.deepcopy(item)
    del gone["payload"]["observations"]
    gone["sha256"] = payload_sha256(gone["payload"])
    _, errs = validate_item(gone, 0)
    assert any(e["field"].endswith("payload.observations") and "required" in e["message"] for e in errs), errs


def _reviewed_items():
    store = Store(":memory:")
    sid = make_sightings(store, 1, seed=5)[0]
    text = "Summary: ok.\nRisk: low, fine.\nAction: Scout again."
    rid = store.save_report(sid, text=text, model_pair={}, policy={}, stats={},
                            provenance=[{"token": 1, "start": 0, "end": len(text), "source": "oracle"}],
                            spans=[], findings=[])
    store.review_report(rid, "flag", by="A. Manager", note="the action is too vague")
    items = _wire(store.outbox_items())
    store.close()
    return items


def test_a_reviewed_report_version_validates():
    items = _reviewed_items()
    _, got = validate_batch(batch(items))
    flagged = got[-1].payload
    assert (flagged["review_status"], flagged["version"], flagged["review_note"]) == ("flagged", 2, "the action is too vague")
    assert got[-1].replaces is None and flagged["replaces"] == got[-2].item_id


@pytest.mark.parametrize("changes, field, words", [
    ({"review_status": "rubber-stamped"}, "review_status", "not one of"),
    ({"reviewed_by": None}, "reviewed_by", "who reviewed"),
    ({"reviewed_at": "yesterday"}, "reviewed_at", "ISO-8601"),
    ({"version": 1}, "version", "replaces nothing"),
    ({"replaces": None}, "version", "must name the one it replaces"),
    ({"replaces": "not-a-uuid"}, "replaces", "not a UUID"),
    ({"review_note": "x" * 2001}, "review_note", "2000"),
])
def test_bad_review_fields_are_named(changes, field, words):
    item = _reviewed_items()[-1]
    item["payload"].update(changes)
    item["sha256"] = payload_sha256(item["payload"])
    _, errs = validate_item(item, 0)
    assert any(e["field"].endswith(f"payload.{field}") and words in e["message"] for e in errs), errs
