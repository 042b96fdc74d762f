"""The office database on SQLite and on PostgreSQL: immutable items, one writer at a time, the CLI's URL."""

from __future__ import annotations

import io
import json
import threading

import pytest
from sqlalchemy import exc as sa_exc

from fieldlog_app.database import Store
from fieldlog_app.sync.protocol import validate_item
from fieldlog_app.sync.server import ServerDB, ServerError
from fieldlog_app.sync.server_cli import main as server_main
from fieldlog_app.sync.testing import make_sightings


def items_of(store) -> list:
    out = []
    for r in store.outbox_items():
        item, errors = validate_item({"item_id": r["item_id"], "kind": r["kind"], "replaces": r["replaces"],
                                      "sha256": r["sha256"], "payload": json.loads(r["payload"])})
        assert not errors
        out.append(item)
    return out


@pytest.fixture
def loaded(server_db_target):
    sdb = ServerDB(server_db_target)
    sdb.add_device("handheld-1")
    store = Store(":memory:")
    make_sightings(store, 4, seed=3)
    yield sdb, items_of(store)
    store.close()


def test_stored_items_cannot_be_changed_or_deleted(loaded):
    sdb, items = loaded
    assert sdb.ingest(items, device="handheld-1").accepted == 4
    for sql in ("UPDATE items SET payload = '{}'", "DELETE FROM items"):
        with pytest.raises(sa_exc.DatabaseError, match="stored items are"):
            with sdb.transaction() as conn:
                conn.execute(sql)
    assert len(sdb.list_items()) == 4


def test_concurrent_uploads_of_the_same_items_store_each_once(loaded):
    sdb, items = loaded
    results, errors = [], []

    def upload():
        try:
            results.append(sdb.ingest(items, device="handheld-1"))
        except Exception as e:  # collected: a thread's exception would otherwise be lost
            errors.append(e)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.accepted for r in results) == [0, 0, 0, 4] and sum(r.duplicate for r in results) == 12
    assert sorted(i["server_seq"] for i in sdb.list_items()) == sorted({r["server_seq"] for x in results
                                                                        for r in x.receipts})


def test_the_cli_takes_a_database_url(loaded, monkeypatch, capsys):
    sdb, items = loaded
    if not sdb.postgres:
        assert server_main(["devices", "--db", sdb.path]) == 0
        assert server_main(["devices", "--database-url", "mysql://x/y"]) == 1
        assert "expected postgresql" in capsys.readouterr().err
        return
    url = sdb.engine.url.render_as_string(hide_password=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert server_main(["user", "add", "ana", "--role", "viewer", "--database-url", url]) == 0
    assert server_main(["--database-url", url, "devices"]) == 0
    assert "handheld-1" in capsys.readouterr().out
    assert server_main(["devices", "--database-url", url, "--db", "/tmp/x.db"]) == 1
    assert "not both" in capsys.readouterr().err
    with pytest.raises(ServerError, match="not a usable"):
        ServerDB(url.rsplit("/", 1)[0] + "/no_such_database_here")
