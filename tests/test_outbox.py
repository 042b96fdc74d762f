"""store.outbox: the sync queue's state machine, the only code that changes an outbox row."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fieldlog_app.database import Store, ValidationError
from fieldlog_app.sync.testing import make_sightings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store():
    s = Store(":memory:")
    yield s
    s.close()


def states(store) -> list[str]:
    return [r["state"] for r in store.outbox.items()]


def test_transitions_move_only_rows_in_the_states_they_start_from(store):
    make_sightings(store, 3, seed=1)
    a, b, c = (r["seq"] for r in store.outbox.items())
    assert store.outbox.claim([a, b]) == 2 and states(store) == ["sending", "sending", "queued"]
    assert [r["attempts"] for r in store.outbox.items()] == [1, 1, 0]
    assert store.outbox.count_attempt([a, c]) == 1  # c is not being sent: not an attempt
    assert store.outbox.mark_sent(a, {"item_id": "x", "status": "accepted"}) == 1
    assert store.outbox.requeue([a, b], error="timed out") == 1  # a has its receipt: it stays sent
    assert store.outbox.fail(c, "bad data", state="needs-attention") == 1
    assert states(store) == ["sent", "queued", "needs-attention"]
    assert store.outbox.fail(a, "late 4xx") == 0 and states(store)[0] == "sent"
    with pytest.raises(ValidationError):
        store.outbox.fail(b, "x", state="sent")
    assert store.outbox.pending_count() == 1
    assert [r["item_id"] for r in store.outbox.attention()] == [store.outbox.items()[2]["item_id"]]
    assert store.outbox.retry() == 1 and states(store) == ["sent", "queued", "queued"]
    assert store.outbox.counts() == {"queued": 2, "sending": 0, "sent": 1, "failed": 0, "needs-attention": 0}
    assert store.outbox.last_sent_at() == store.outbox.items()[0]["updated_at"]


def test_recover_requeues_interrupted_rows_and_a_transaction_undoes_every_transition(store):
    make_sightings(store, 2, seed=2)
    seqs = [r["seq"] for r in store.outbox.items()]
    store.outbox.claim(seqs)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.outbox.mark_sent(seqs[0], {"item_id": "x"})
            raise RuntimeError("crash before commit")
    assert states(store) == ["sending", "sending"]
    assert store.outbox.recover() == 2 and states(store) == ["queued", "queued"]


def test_sync_runs_are_logged_and_read_back(store):
    assert store.outbox.last_run() is None and store.outbox.last_success_at() is None
    store.outbox.log_run({"sent": 2}, ok=True, at="2026-07-21T10:00:00.000Z")
    store.outbox.log_run({"error": "down"}, ok=False, at="2026-07-21T11:00:00.000Z")
    assert store.outbox.last_run() == {"at": "2026-07-21T11:00:00.000Z", "action": "sync-error",
                                       "detail": {"error": "down"}}
    assert store.outbox.last_success_at() == "2026-07-21T10:00:00.000Z"


def _function_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fieldlog_app")):
                    found.append(f"{path.name}:{node.lineno} from {'.' * node.level}{node.module}")
    return found


def test_no_sql_on_the_outbox_outside_the_store_and_no_hidden_screen_imports():
    for path in (ROOT / "fieldlog_app" / "sync" / "client.py", *(ROOT / "fieldlog_app" / "screens").glob("*.py")):
        text = path.read_text()
        for verb in ("UPDATE outbox", "FROM outbox", "INSERT INTO audit_log"):
            assert verb not in text, f"{path.name} runs SQL on the outbox ({verb})"
    hidden = [imp for p in [ROOT / "fieldlog_app" / "app.py", *(ROOT / "fieldlog_app" / "screens").glob("*.py")]
              for imp in _function_level_imports(p)]
    assert hidden == []
