"""`edgespec generate` on a low battery: 15% runs in saver mode, a critical battery really queues the job,
and `edgespec queue run` generates it on the charger (tiny models, the README's examples)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from edgespec import cli
from edgespec.jobqueue import ENV_QUEUE, JobQueue, QueueError
from test_writer import NOTE_PATH, installed_writer  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def queue(tmp_path, monkeypatch):
    folder = tmp_path / "queue"
    monkeypatch.setenv(ENV_QUEUE, str(folder))
    before = signal.getsignal(signal.SIGINT)  # generate installs a SIGINT handler: put the runner's back
    yield JobQueue(folder)
    signal.signal(signal.SIGINT, before)


@pytest.fixture
def models(tiny_oracle_path, tiny_drafter_close_path):
    return ["--oracle", str(tiny_oracle_path), "--drafter", "model", "--draft-model", str(tiny_drafter_close_path),
            "--n-ctx", "1024", "--threads", "1", "--max-tokens", "24"]


def test_15_percent_with_allow_relaxed_runs_in_saver_mode(installed_writer, models, queue, capsys):
    """The README's `--battery-sim 15 --allow-relaxed` example."""
    assert cli.main(["generate", "--notes", str(NOTE_PATH), *models, "--battery-sim", "15", "--allow-relaxed",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"]["mode"] == "saver" and out["stats"]["power_mode"] == "saver"
    assert out["policy"]["relax_unverified"] is True and out["text"]
    assert queue.jobs() == []


def test_15_percent_without_allow_relaxed_is_saver_and_lossless(installed_writer, models, capsys):
    assert cli.main(["generate", "--notes", str(NOTE_PATH), *models, "--battery-sim", "15", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"]["mode"] == "saver" and out["policy"]["relax_unverified"] is False
    assert out["stats"]["other_verified_rate"] == 1.0


def test_critical_battery_queues_the_job_and_queue_run_generates_it_on_the_charger(installed_writer, models, queue,
                                                                                  capsys, tmp_path):
    note_copy = tmp_path / "note.json"
    note_copy.write_text(NOTE_PATH.read_text())
    assert cli.main(["generate", "--notes", str(note_copy), *models, "--battery-sim", "4"]) == 0
    out, err = capsys.readouterr()
    (job,) = queue.jobs()
    assert out == "" and f"queued as job {job.id} (position 1 of 1)" in err and "edgespec queue run" in err
    assert job.kind == "notes" and job.input["block"] == "B4" and job.options["max_tokens"] == 24
    note_copy.unlink()  # the job holds the note itself, not the path
    assert cli.main(["generate", "--prompt", "The vineyard", *models, "--battery-sim", "4", "--json"]) == 0
    queued = json.loads(capsys.readouterr().out)
    assert (queued["position"], queued["queue_length"], queued["power_mode"]) == (2, 2, "critical")

    assert cli.main(["queue", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 2 and "report for block B4 on 2026-07-21" in listing[0] and "prompt 'The vineyard'" in listing[1]

    # still on battery: nothing runs, and it says why
    assert cli.main(["queue", "run", "--battery-sim", "4"]) == 0
    assert "2 jobs still wait for the charger" in capsys.readouterr().err and len(queue.jobs()) == 2

    assert cli.main(["queue", "run", "--battery-sim", "4:charging"]) == 0
    out, err = capsys.readouterr()
    assert queue.jobs() == [] and err.count("done: ") == 2
    done = sorted(queue.done_dir.glob("*.json"))
    results = [json.loads(p.read_text()) for p in done]
    assert [r["job"]["kind"] for r in results] == ["notes", "prompt"]
    assert all(r["output"]["text"] and r["output"]["policy"]["mode"] == "performance" for r in results)
    assert results[0]["output"]["text"] in out  # streamed as it was generated


def test_now_skips_the_queue(installed_writer, models, queue, capsys):
    assert cli.main(["generate", "--notes", str(NOTE_PATH), *models, "--battery-sim", "4", "--now", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"]["mode"] == "critical" and out["text"] and queue.jobs() == []


def test_queue_run_now_runs_on_battery_and_drop_removes_a_job(installed_writer, models, queue, capsys):
    for _ in range(2):
        assert cli.main(["generate", "--prompt", "The vineyard", *models, "--battery-sim", "3"]) == 0
    first, second = queue.jobs()
    assert cli.main(["queue", "drop", first.id[:20]]) == 0
    assert [j.id for j in queue.jobs()] == [second.id]
    assert cli.main(["queue", "run", "--now", "--battery-sim", "3"]) == 0
    assert queue.jobs() == [] and len(list(queue.done_dir.glob("*.json"))) == 1
    capsys.readouterr()
    assert cli.main(["queue", "drop", "nope"]) == 1
    assert "no queued job 'nope'" in capsys.readouterr().err


def test_a_failing_job_stays_queued_with_its_error(installed_writer, queue, capsys):
    assert cli.main(["generate", "--prompt", "x", "--oracle", "/nonexistent.gguf", "--battery-sim", "4"]) == 0
    assert cli.main(["queue", "run", "--battery-sim", "90:charging"]) == 1
    (job,) = queue.jobs()
    assert "nonexistent" in job.error and "failed, left in the queue" in capsys.readouterr().err
    assert "last run failed" in job.describe()


def test_a_broken_job_file_is_named_not_skipped(queue):
    queue.add("prompt", "x", {})
    (queue.folder / "20260101T000000000000Z-deadbeef.json").write_text("{not json")
    (queue.folder / "my-note.json").write_text("{}")  # not a job name: left alone
    with pytest.raises(QueueError, match="20260101T000000000000Z-deadbeef.json: not a readable job file"):
        queue.jobs()


def test_readme_examples_are_the_ones_tested():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "--battery-sim 15 --allow-relaxed" in readme and "edgespec queue run" in readme
