"""The farm-office server in-process (Starlette TestClient): auth, validation, idempotency, exports."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import uuid

import httpx
import pytest

from fieldlog_app.database import Store, payload_sha256
from fieldlog_app.sync.app import create_app
from fieldlog_app.sync.server import ServerDB, ServerError
from fieldlog_app.sync.server_cli import main as server_main
from fieldlog_app.sync.testing import SwappableApp, ThreadServer, make_sightings

MAX_BODY = 64 * 1024


def outbox_items(store):
    return [{"item_id": r["item_id"], "kind": r["kind"], "replaces": r["replaces"], "sha256": r["sha256"],
             "payload": json.loads(r["payload"])} for r in store.outbox_items()]


@pytest.fixture(scope="module")
def http_server():
    swap = SwappableApp()
    with ThreadServer(swap) as srv:
        yield swap, srv.url


@pytest.fixture
def env(server_db_target, http_server):
    swap, url = http_server
    sdb = ServerDB(server_db_target)
    token = sdb.add_device("handheld-1")
    swap.app = create_app(sdb, max_body_bytes=MAX_BODY)
    store = Store(":memory:")
    with httpx.Client(base_url=url) as client:
        yield sdb, token, client, store
    store.close()


def resigned(item: dict, **payload_changes) -> dict:
    """A copy of an outbox item with its payload edited and its checksum recomputed (a well-formed forgery)."""
    out = copy.deepcopy(item)
    out["payload"].update(payload_changes)
    out["sha256"] = payload_sha256(out["payload"])
    return out


def post(client, token, items, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/v1/batches", json={"protocol": 1, "batch_id": str(uuid.uuid4()), "items": items},
                       headers=headers, **kw)


def held(sdb):
    return {r["item_id"]: r["sha256"] for r in sdb.list_items()}


def test_health_needs_no_token_and_states_limits(env):
    _, _, client, _ = env
    r = client.get("/v1/health")
    assert r.status_code == 200
    assert r.json()["protocol"] == 1 and r.json()["max_body_bytes"] == MAX_BODY


def test_accept_then_duplicate_returns_the_original_receipt(env):
    sdb, token, client, store = env
    make_sightings(store, 3)
    items = outbox_items(store)
    r1 = post(client, token, items)
    assert r1.status_code == 200, r1.text
    rec1 = r1.json()["receipts"]
    assert [r["status"] for r in rec1] == ["accepted"] * 3
    assert [r["sha256"] for r in rec1] == [i["sha256"] for i in items]
    r2 = post(client, token, items)
    assert r2.status_code == 200
    rec2 = r2.json()["receipts"]
    assert [r["status"] for r in rec2] == ["duplicate"] * 3
    assert [(r["server_seq"], r["received_at"]) for r in rec2] == [(r["server_seq"], r["received_at"]) for r in rec1]
    assert held(sdb) == {i["item_id"]: i["sha256"] for i in items}


@pytest.mark.parametrize("header, status", [
    (None, 401), ("Bearer fl_not-a-token", 401), ("Basic dXNlcjpwYXNz", 401), ("Bearer", 401),
])
def test_missing_or_invalid_token_is_401_and_stores_nothing(env, header, status):
    sdb, _, client, store = env
    make_sightings(store, 1)
    headers = {"Authorization": header} if header else {}
    r = client.post("/v1/batches", json={"protocol": 1, "items": outbox_items(store)}, headers=headers)
    assert r.status_code == status
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "token" in r.json()["message"] or "Authorization" in r.json()["message"]
    assert held(sdb) == {}
    for path in ("/v1/items", "/v1/export.csv", "/v1/export.geojson"):
        assert client.get(path, headers=headers).status_code == 401


def test_revoked_device_is_403_and_stores_nothing(env):
    sdb, token, client, store = env
    make_sightings(store, 1)
    sdb.revoke_device("handheld-1")
    r = post(client, token, outbox_items(store))
    assert r.status_code == 403 and "revoked" in r.json()["message"]
    assert held(sdb) == {}
    new_token = sdb.add_device("handheld-1", replace=True)  # re-enabled with a new token; the old stays dead
    assert post(client, token, outbox_items(store)).status_code == 401
    assert post(client, new_token, outbox_items(store)).status_code == 200


def test_tokens_are_stored_hashed(env, tmp_path):
    sdb, token, _, _ = env
    if not sdb.postgres:  # the whole file, not only what a query shows
        raw = (tmp_path / "server.db").read_bytes()
        assert token.encode() not in raw
    with sdb.connect() as conn:
        stored = [dict(r) for r in conn.execute("SELECT * FROM devices")]
    assert stored and token not in repr(stored)
    with pytest.raises(ServerError, match="already exists"):
        sdb.add_device("handheld-1")
    with pytest.raises(ServerError, match="device name"):
        sdb.add_device("")


@pytest.mark.parametrize("body, ctype, status, words", [
    (b'{"protocol": 1, "items": [', "application/json", 400, "malformed JSON"),
    (b'{"protocol": 1, "items": [{"item_id": 5, "kind": "sighting", "replaces": null, "sha256": "ab", '
     b'"payload": {}}]}', "application/json", 422, "items[0].item_id: expected a UUID string, got integer"),
    (b"protocol=1", "application/x-www-form-urlencoded", 415, "application/json"),
    (b"x" * (MAX_BODY + 1), "application/json", 413, "larger than"),
])
def test_malformed_wrong_types_oversized_are_4xx_and_store_nothing(env, body, ctype, status, words):
    sdb, token, client, _ = env
    r = client.post("/v1/batches", content=body,
                    headers={"Authorization": f"Bearer {token}", "Content-Type": ctype})
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    assert held(sdb) == {}


def test_one_bad_item_rejects_the_whole_batch(env):
    sdb, token, client, store = env
    make_sightings(store, 3)
    items = outbox_items(store)
    items[2]["payload"]["observations"][0]["sampled"] = "many"
    r = post(client, token, items)
    assert r.status_code == 422
    errs = r.json()["errors"]
    assert {e["item_id"] for e in errs} == {items[2]["item_id"]}
    assert "observations[0].sampled" in errs[0]["field"]
    assert held(sdb) == {}


def test_diverging_payload_under_the_same_uuid_is_409_and_rolls_back_the_batch(env):
    sdb, token, client, store = env
    make_sightings(store, 2)
    items = outbox_items(store)
    assert post(client, token, items[:1]).status_code == 200
    forged = resigned(items[0], notes="someone else's version")
    r = post(client, token, [items[1], forged])
    assert r.status_code == 409
    (c,) = r.json()["conflicts"]
    assert c["item_id"] == items[0]["item_id"] and c["reason"] == "diverging-payload"
    assert c["server_sha256"] == items[0]["sha256"]
    assert held(sdb) == {items[0]["item_id"]: items[0]["sha256"]}  # items[1] was not stored either
    assert sdb.counts()["conflicts"] == 1


def test_stale_edit_and_unknown_base_are_409(env):
    sdb, token, client, store = env
    (sid,) = make_sightings(store, 1)
    base = outbox_items(store)[0]
    v2 = store.revise(sid, {"notes": "edit A"})
    edit_a = outbox_items(store)[1]
    # a second edit of the same base, made on another copy of the device database
    new_id = str(uuid.uuid4())
    edit_b = {**resigned(edit_a, id=new_id, notes="edit B"), "item_id": new_id}

    r = post(client, token, [edit_a])
    assert r.status_code == 409 and r.json()["conflicts"][0]["reason"] == "unknown-base"
    assert post(client, token, [base, edit_a]).status_code == 200  # base and its revision in one batch
    r = post(client, token, [edit_b])
    assert r.status_code == 409
    c = r.json()["conflicts"][0]
    assert c["reason"] == "stale-edit" and c["current_id"] == v2
    current = [i["item_id"] for i in sdb.list_items(current=True)]
    assert current == [v2]


def test_huge_integers_are_422_not_a_500_and_store_nothing(env):
    sdb, token, client, store = env
    (sid,) = make_sightings(store, 1)
    base = outbox_items(store)[0]
    store.revise(sid, {"notes": "second visit"})
    edit = outbox_items(store)[1]
    assert post(client, token, [base]).status_code == 200
    for bad in (resigned(edit, version=2**63), resigned(edit, version=10**30)):
        r = post(client, token, [bad])
        assert r.status_code == 422, r.text
        assert "items[0].payload.version" in r.json()["message"]
    obs = dict(base["payload"]["observations"][0])
    new_id = str(uuid.uuid4())
    huge = {**resigned(base, id=new_id, observations=[{**obs, "sampled": 2**63, "infested": 1}]), "item_id": new_id}
    r = post(client, token, [huge])
    assert r.status_code == 422 and "observations[0].sampled" in r.json()["message"]
    assert held(sdb) == {base["item_id"]: base["sha256"]}


def test_protocol_must_be_the_integer_one(env):
    sdb, token, client, store = env
    make_sightings(store, 1)
    r = client.post("/v1/batches", json={"protocol": True, "batch_id": str(uuid.uuid4()),
                                         "items": outbox_items(store)},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422 and "protocol" in r.json()["message"]
    assert held(sdb) == {}


def test_a_revision_must_be_the_next_version_of_what_it_replaces(env):
    sdb, token, client, store = env
    (sid,) = make_sightings(store, 1)
    base = outbox_items(store)[0]
    store.revise(sid, {"notes": "second visit"})
    edit = outbox_items(store)[1]
    assert post(client, token, [base]).status_code == 200
    r = post(client, token, [resigned(edit, version=999)])
    assert r.status_code == 409
    c = r.json()["conflicts"][0]
    assert c["reason"] == "wrong-version" and "version 2" in c["message"]
    assert post(client, token, [edit]).status_code == 200
    assert len(held(sdb)) == 2


def test_a_report_of_a_sighting_the_server_does_not_hold_is_refused(env):
    sdb, token, client, store = env
    (sid,) = make_sightings(store, 1)
    store.save_report(sid, text="Summary: fine.", model_pair={}, policy={}, stats={}, provenance=[], spans=[],
                      findings=[])
    sighting, report = outbox_items(store)
    r = post(client, token, [report])
    assert r.status_code == 409
    assert r.json()["conflicts"][0]["reason"] == "unknown-sighting" and held(sdb) == {}
    assert post(client, token, [sighting, report]).status_code == 200  # in order, in one batch: fine
    new_id = str(uuid.uuid4())
    of_a_report = {**resigned(report, id=new_id, sighting_id=report["item_id"]), "item_id": new_id}
    r = post(client, token, [of_a_report])
    assert r.status_code == 409 and r.json()["conflicts"][0]["reason"] == "unknown-sighting"
    assert len(held(sdb)) == 2


def test_only_the_device_that_logged_a_sighting_may_revise_it_or_report_on_it(env):
    sdb, token, client, store = env
    other = sdb.add_device("handheld-2")
    (sid,) = make_sightings(store, 1)
    base = outbox_items(store)[0]
    assert post(client, token, [base]).status_code == 200
    v2 = store.revise(sid, {"notes": "second visit"})
    store.save_report(v2, text="Summary: fine.", model_pair={}, policy={}, stats={}, provenance=[], spans=[],
                      findings=[])
    edit, report = outbox_items(store)[1:]
    r = post(client, other, [edit])  # a well-formed next version, from the wrong handheld
    assert r.status_code == 409
    c = r.json()["conflicts"][0]
    assert c["reason"] == "other-device" and "handheld-1" in c["message"]
    assert post(client, token, [edit]).status_code == 200
    r = post(client, other, [report])
    assert r.status_code == 409 and r.json()["conflicts"][0]["reason"] == "other-device"
    assert len(held(sdb)) == 2
    assert post(client, token, [report]).status_code == 200
    assert {i["device"] for i in sdb.list_items()} == {"handheld-1"}


def test_items_listing_and_exports(env):
    sdb, token, client, store = env
    ids = make_sightings(store, 3, seed=11)
    v2 = store.revise(ids[0], {"notes": "=HYPERLINK(\"http://evil\")"})
    assert post(client, token, outbox_items(store)).status_code == 200
    # a syncing device uploads but does not read the farm's data (issue 16): the reader role allows it
    for path in ("/v1/items", "/v1/export.csv", "/v1/export.geojson"):
        r = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and "reader" in r.json()["message"]
    auth = {"Authorization": f"Bearer {sdb.add_device('office-pc', role='reader')}"}
    r = client.get("/v1/items", headers=auth)
    assert len(r.json()["items"]) == 4
    r = client.get("/v1/items?kind=sighting&current=1&payload=1&limit=2", headers=auth)
    got = r.json()
    assert len(got["items"]) == 2 and got["next_since"] == got["items"][-1]["server_seq"]
    assert all(i["current"] and i["payload"]["id"] == i["item_id"] for i in got["items"])
    assert client.get("/v1/items?limit=0", headers=auth).status_code == 422

    r = client.get("/v1/export.csv", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(row["sighting_id"] for row in rows) == sorted([v2, ids[1], ids[2]])  # current versions only
    assert all(row["device"] == "handheld-1" for row in rows)
    evil = [row for row in rows if row["sighting_id"] == v2][0]
    assert evil["notes"].startswith("'=")  # a spreadsheet will not run it
    all_rows = list(csv.DictReader(io.StringIO(client.get("/v1/export.csv?versions=all", headers=auth).text)))
    assert len(all_rows) == 4

    gj = client.get("/v1/export.geojson", headers=auth).json()
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 3
    f = [f for f in gj["features"] if f["id"] == ids[1]][0]
    s = store.get_sighting(ids[1])
    assert f["geometry"] == {"type": "Point", "coordinates": [s["lon"], s["lat"]]}


def test_risk_class_is_accepted_exported_and_a_bad_one_is_422(env):
    sdb, token, client, store = env
    ids = make_sightings(store, 2, seed=12)
    v2 = store.revise(ids[0], {"risk_class": "low"})
    items = outbox_items(store)
    bad = resigned(items[1], risk_class="LOW")
    r = post(client, token, [items[0], bad])
    assert r.status_code == 422
    (e,) = r.json()["errors"]
    assert e["item_id"] == bad["item_id"] and e["field"] == "items[1].payload.risk_class"
    assert held(sdb) == {}
    assert post(client, token, items).status_code == 200
    auth = {"Authorization": f"Bearer {sdb.add_device('office-pc', role='reader')}"}  # a syncing device reads nothing
    rows = list(csv.DictReader(io.StringIO(client.get("/v1/export.csv?versions=all", headers=auth).text)))
    assert {row["sighting_id"]: row["risk_class"] for row in rows} == {ids[0]: "", ids[1]: "", v2: "low"}


def test_server_cli_devices_and_export(tmp_path, capsys):
    db = str(tmp_path / "s.db")
    assert server_main(["add-device", "tablet 2", "--db", db]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("fl_") and len(token) > 30
    assert server_main(["--db", db, "add-device", "tablet 2"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert server_main(["revoke-device", "nope", "--db", db]) == 1
    assert server_main(["revoke-device", "tablet 2", "--db", db]) == 0
    assert server_main(["devices", "--db", db]) == 0
    assert "revoked" in capsys.readouterr().out
    assert server_main(["export", "csv", "--db", db, "-o", str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out.csv").read_text().startswith("sighting_id,")
    assert server_main(["--port", "0"]) == 2


def test_a_nothing_found_walk_and_reviewed_report_versions_reach_the_office(env):
    """Issue 15: an empty walk syncs as a sighting; each review is a report version the office keeps with
    its status, who and when (the latest version is the sighting's report)."""
    sdb, token, client, store = env
    walk = store.finalize(store.save_draft({"block": "B4", "rows": "1-40", "date": "2026-05-04", "observations": []}))
    text = "Summary: Nothing found in block B4.\nRisk: low, nothing found.\nAction: Walk the block next week."
    rid = store.save_report(walk, text=text, model_pair={}, policy={}, stats={},
                            provenance=[{"token": 1, "start": 0, "end": len(text), "source": "oracle", "verified": True}],
                            spans=[], findings=[])
    edited = store.review_report(rid, "edit", by="A. Manager", text=text.replace("next week", "on 05-11"))
    approved = store.review_report(edited, "approve", by="A. Manager")
    assert post(client, token, outbox_items(store)).status_code == 200
    reports = {r["item_id"]: r["payload"] for r in sdb.list_items(kind="report", with_payload=True)}
    assert set(reports) == {rid, edited, approved}
    assert "review_status" not in reports[rid]  # as generated: the payload an older office already takes
    assert (reports[edited]["review_status"], reports[edited]["version"], reports[edited]["replaces"]) == ("edited", 2, rid)
    assert reports[approved]["review_status"] == "approved" and reports[approved]["reviewed_by"] == "A. Manager"
    assert reports[approved]["text"].endswith("on 05-11.")
    [s] = [r for r in sdb.list_items(kind="sighting", with_payload=True) if r["item_id"] == walk]
    assert s["payload"]["observations"] == []
    reader = {"Authorization": f"Bearer {sdb.add_device('office-pc', role='reader')}"}  # a syncing device reads nothing
    rows = list(csv.DictReader(io.StringIO(client.get("/v1/export.csv", headers=reader).text)))
    assert [(r["sighting_id"], r["pest"]) for r in rows] == [(walk, "")]  # the walk is a row, with no pest


# ------------------------------------------------------------------ reviewed report versions (their chain)
REPORT_TEXT = "Summary: Leafhoppers below the guide.\nRisk: low.\nAction: Scout again next week."


def reported(store, *, seed: int = 0) -> tuple[str, str]:
    """A finalized sighting and a report of it, queued in ``store``: (sighting id, report id)."""
    (sid,) = make_sightings(store, 1, seed=seed)
    rid = store.save_report(sid, text=REPORT_TEXT, model_pair={}, policy={}, stats={},
                            provenance=[{"token": 1, "start": 0, "end": len(REPORT_TEXT), "source": "oracle",
                                         "verified": True}], spans=[], findings=[])
    return sid, rid


def by_id(store) -> dict[str, dict]:
    return {i["item_id"]: i for i in outbox_items(store)}


def reissued(item: dict, **payload_changes) -> dict:
    """``item`` under a new id with its payload edited and re-hashed (another copy of the device database)."""
    new_id = str(uuid.uuid4())
    return {**resigned(item, id=new_id, **payload_changes), "item_id": new_id}


def test_a_reviewed_report_must_replace_a_report_the_office_holds_of_its_sighting(env):
    sdb, token, client, store = env
    sid, rid = reported(store)
    edited = store.review_report(rid, "edit", by="A. Manager", text=REPORT_TEXT.replace("next week", "on 07-20"))
    items = by_id(store)
    r = post(client, token, [items[sid], items[edited]])  # the version it replaces never reached the office
    assert r.status_code == 409
    (c,) = r.json()["conflicts"]
    assert (c["item_id"], c["reason"]) == (edited, "unknown-base") and rid in c["message"]
    assert held(sdb) == {}  # all-or-nothing, as for any conflict
    assert post(client, token, [items[sid], items[rid]]).status_code == 200
    # a forged chain: "replaces" names the sighting, or a report of another sighting version
    r = post(client, token, [reissued(items[edited], replaces=sid)])
    assert r.status_code == 409
    c = r.json()["conflicts"][0]
    assert c["reason"] == "unknown-base" and "is a sighting" in c["message"]
    (sid2,) = make_sightings(store, 1, seed=3)
    r = post(client, token, [by_id(store)[sid2], reissued(items[edited], sighting_id=sid2)])
    assert r.status_code == 409
    c = r.json()["conflicts"][0]
    assert c["reason"] == "unknown-base" and f"is of sighting {sid}" in c["message"]
    assert set(held(sdb)) == {sid, rid}
    assert post(client, token, [items[edited]]).status_code == 200
    assert set(held(sdb)) == {sid, rid, edited}


def test_a_reviewed_report_must_be_the_next_version_of_what_it_replaces(env):
    sdb, token, client, store = env
    sid, rid = reported(store)
    approved = store.review_report(rid, "approve", by="A. Manager")
    items = by_id(store)
    assert post(client, token, [items[sid], items[rid]]).status_code == 200
    for version in (3, 7):
        r = post(client, token, [resigned(items[approved], version=version)])
        assert r.status_code == 409
        c = r.json()["conflicts"][0]
        assert c["reason"] == "wrong-version" and "must be version 2" in c["message"]
    assert post(client, token, [items[approved]]).status_code == 200
    assert set(held(sdb)) == {sid, rid, approved}


def test_a_report_version_cannot_be_replaced_twice_and_a_resend_stays_a_duplicate(env):
    sdb, token, client, store = env
    sid, rid = reported(store)
    edited = store.review_report(rid, "edit", by="A. Manager", text=REPORT_TEXT.replace("next week", "on 07-20"))
    items = by_id(store)
    assert post(client, token, list(items.values())).status_code == 200
    # a second review of the same version, made on another copy of the device database
    other_edit = reissued(items[edited], text=REPORT_TEXT.replace("next week", "tomorrow"))
    r = post(client, token, [other_edit])
    assert r.status_code == 409
    c = r.json()["conflicts"][0]
    assert (c["reason"], c["current_id"]) == ("stale-edit", edited)
    approved = store.review_report(edited, "approve", by="A. Manager")
    assert post(client, token, [by_id(store)[approved]]).status_code == 200
    r = post(client, token, [other_edit])  # the current version is now the head of the chain
    assert r.status_code == 409 and r.json()["conflicts"][0]["current_id"] == approved
    r = post(client, token, [reissued(by_id(store)[approved], review_status="flagged", reviewed_by="B. Other")])
    assert r.status_code == 409 and r.json()["conflicts"][0]["reason"] == "stale-edit"  # edited is taken, too
    r = post(client, token, outbox_items(store))  # a retry after a lost answer: every one a duplicate
    assert r.status_code == 200 and {x["status"] for x in r.json()["receipts"]} == {"duplicate"}
    assert set(held(sdb)) == {sid, rid, edited, approved}


def test_a_bundle_keeps_the_rest_when_a_report_version_is_refused(env):
    """A bundle import stores every item that does not conflict (ingest with all_or_nothing=False)."""
    from fieldlog_app.sync.protocol import validate_item

    sdb, token, client, store = env
    sid, rid = reported(store)
    approved = store.review_report(rid, "approve", by="A. Manager")
    items = by_id(store)
    wire = [items[sid], items[rid], resigned(items[approved], version=5)]
    result = sdb.ingest([validate_item(i)[0] for i in wire], device="handheld-1", source="bundle",
                        all_or_nothing=False)
    assert [(c.item_id, c.reason) for c in result.conflicts] == [(approved, "wrong-version")]
    assert [r["item_id"] for r in result.receipts] == [sid, rid]
    assert set(held(sdb)) == {sid, rid}
    assert sdb.conflicts(unresolved=True)[0]["item_id"] == approved


def test_only_the_device_that_wrote_a_report_may_replace_it(env):
    sdb, token, client, store = env
    other = sdb.add_device("handheld-2")
    store2 = Store(":memory:")
    try:
        sid2, rid2 = reported(store2, seed=4)
        assert post(client, other, outbox_items(store2)).status_code == 200
    finally:
        store2.close()
    sid, rid = reported(store)
    edited = store.review_report(rid, "edit", by="A. Manager", text=REPORT_TEXT.replace("next week", "on 07-20"))
    items = by_id(store)
    assert post(client, token, [items[sid], items[rid]]).status_code == 200
    # handheld-1 names handheld-2's report as the one its review replaces
    r = post(client, token, [reissued(items[edited], replaces=rid2)])
    assert r.status_code == 409
    c = r.json()["conflicts"][0]
    assert c["reason"] == "other-device" and "handheld-2" in c["message"]
    r = post(client, token, [reissued(items[edited], replaces=rid2, sighting_id=sid2)])
    assert r.status_code == 409 and r.json()["conflicts"][0]["reason"] == "other-device"
    assert {i["item_id"] for i in sdb.list_items(kind="report")} == {rid2, rid}
    assert post(client, token, [items[edited]]).status_code == 200


def test_a_corrected_report_syncs_and_is_the_sightings_report_at_the_office(env):
    from fieldlog_app.sync.client import sync_once

    sdb, token, client, store = env
    url = str(client.base_url)
    sid, rid = reported(store)
    assert sync_once(store, url, token).sent == 2
    fixed = REPORT_TEXT.replace("next week", "on 07-20")
    edited = store.review_report(rid, "edit", by="A. Manager", text=fixed)
    got = sync_once(store, url, token)
    assert (got.sent, got.conflicts) == (1, 0)
    approved = store.review_report(edited, "approve", by="A. Manager", note="checked in the block")
    got = sync_once(store, url, token)
    assert (got.sent, got.conflicts) == (1, 0)
    reports = {r["item_id"]: r["payload"] for r in sdb.list_items(kind="report", with_payload=True)}
    assert [(reports[i].get("version"), reports[i].get("replaces")) for i in (rid, edited, approved)] == \
        [(None, None), (2, rid), (3, edited)]
    [row] = sdb.export_sightings()
    assert (row["id"], row["latest_report_id"], row["report_text"]) == (sid, approved, fixed)
    # and the office's pages say so
    from starlette.testclient import TestClient

    from fieldlog_app.office import demo
    from fieldlog_app.office.accounts import Office

    Office(sdb).add_user("maria", demo.PASSWORD, "manager")
    office = TestClient(create_app(sdb), base_url="http://office.test")
    login = office.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
    assert office.post("/login", data={"csrf": csrf, "name": "maria", "password": demo.PASSWORD},
                       follow_redirects=False).status_code == 303
    page = office.get(f"/sightings/{sid}").text
    assert f"/reports/{approved}" in page and f"/reports/{rid}" in page
    page = re.sub(r"<[^>]+>", "", office.get(f"/reports/{approved}").text)  # the text, without its provenance runs
    assert "Action: Scout again on 07-20." in page and "On the device: approved" in page


def test_the_office_version_of_a_report_stays_beside_the_device_versions(env):
    from fieldlog_app.office import check_queue, rewrite
    from fieldlog_app.sync.client import sync_once

    sdb, token, client, store = env
    url = str(client.base_url)
    sid_b, rid_b = reported(store, seed=9)
    assert sync_once(store, url, token).sent == 2
    note, report = check_queue.report_inputs(sdb, rid_b)
    office_row = rewrite.save_office_version(sdb, rid_b, note, report, rewrite.RewriteResult(
        text=report["text"], passes=[{"kind": "score", "chars": 10, "seconds": 1.0}], seconds=1.0,
        accepted_chars=len(report["text"]), model="office-7b", finished=True))
    flagged = store.review_report(rid_b, "flag", by="A. Manager", note="too vague")
    got = sync_once(store, url, token)
    assert (got.sent, got.conflicts) == (1, 0)
    r = post(client, token, [reissued(by_id(store)[flagged], replaces=office_row["office_report_id"])])
    assert r.status_code == 409  # a device never replaces the office's version
    c = r.json()["conflicts"][0]
    assert c["reason"] == "unknown-base" and "office's own version" in c["message"]
