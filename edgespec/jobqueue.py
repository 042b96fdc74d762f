"""Generation jobs waiting for the charger: one JSON file per job in a queue folder.

``edgespec generate`` on a critical battery (not charging) writes the job here
instead of running it, and ``edgespec queue run`` generates the queued jobs, oldest
first, once the device is charging (or at once with ``--now``). A job holds the
input itself (the validated note, or the prompt), not a path to it, so moving or
editing the input file afterwards does not change what is generated. A finished
job's output (the ``generate --json`` object) is written to ``done/<id>.json``
and the job file removed; a failed job stays queued with its error.

Folder: ``$EDGESPEC_QUEUE``, else ``<user data dir>/edgespec/queue``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import EdgespecError, atomic

ENV_QUEUE = "EDGESPEC_QUEUE"
JOB_VERSION = 1
_ID = re.compile(r"^\d{8}T\d{6}\d{6}Z-[0-9a-f]{8}$")


class QueueError(EdgespecError):
    """A queue folder or job file that cannot be used (named in the message)."""


def queue_dir() -> Path:
    env = os.environ.get(ENV_QUEUE)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("edgespec")) / "queue"


@dataclass(frozen=True)
class Job:
    id: str
    created_at: str
    kind: str  # "notes" | "prompt"
    input: Any  # the note (a dict) or the prompt text
    options: dict
    error: str | None = None
    path: Path | None = None

    def describe(self) -> str:
        if self.kind == "notes" and isinstance(self.input, dict):
            what = f"report for block {self.input.get('block', '?')} on {self.input.get('date', '?')}"
        else:
            text = str(self.input).replace("\n", " ")
            what = f"prompt {text[:40]!r}" + ("…" if len(text) > 40 else "")
        return what + (f" (last run failed: {self.error})" if self.error else "")

    def to_dict(self) -> dict:
        return {"version": JOB_VERSION, "id": self.id, "created_at": self.created_at, "kind": self.kind,
                "input": self.input, "options": self.options, "error": self.error}


def _write_json(path: Path, data: dict) -> None:
    """Whole and on disk before it counts: a pulled battery never leaves half a job, nor loses a queued one."""
    try:
        atomic.write_json(path, data, indent=1, durable=True)
    except OSError as e:
        raise QueueError(f"cannot write {path}: {e}") from None


class JobQueue:
    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else queue_dir()

    @property
    def done_dir(self) -> Path:
        return self.folder / "done"

    def add(self, kind: str, input: Any, options: dict) -> tuple[Job, int]:
        """Queue a job; returns it and its position (1 = next to run)."""
        if kind not in ("notes", "prompt"):
            raise QueueError(f"job kind must be 'notes' or 'prompt', got {kind!r}")
        now = _dt.datetime.now(_dt.timezone.utc)
        job = Job(f"{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}", now.isoformat(timespec="seconds"), kind,
                  input, dict(options))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise QueueError(f"cannot create the queue folder {self.folder}: {e}") from None
        path = self.folder / f"{job.id}.json"
        _write_json(path, job.to_dict())
        ids = [j.id for j in self.jobs()]
        return Job(**{**job.__dict__, "path": path}), ids.index(job.id) + 1

    def jobs(self) -> list[Job]:
        """Queued jobs, oldest first. A file that is not a job is an error naming it (never skipped silently)."""
        if not self.folder.is_dir():
            return []
        out = []
        for p in sorted(self.folder.glob("*.json")):
            if not _ID.match(p.stem):
                continue  # not ours (e.g. a note the user saved here): leave it alone
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise QueueError(f"{p}: not a readable job file ({e}); move it away to go on") from None
            if not isinstance(d, dict) or d.get("version") != JOB_VERSION or d.get("kind") not in ("notes", "prompt") \
                    or not isinstance(d.get("options"), dict):
                raise QueueError(f"{p}: not a job file of this edgespec (version {JOB_VERSION}); move it away to go on")
            out.append(Job(p.stem, str(d.get("created_at") or ""), d["kind"], d.get("input"), d["options"],
                           d.get("error"), p))
        return out

    def get(self, job_id: str) -> Job:
        matches = [j for j in self.jobs() if j.id == job_id or j.id.startswith(job_id)]
        if len(matches) != 1:
            raise QueueError(f"no queued job {job_id!r}" if not matches else f"{job_id!r} matches more than one job")
        return matches[0]

    def finish(self, job: Job, output: dict) -> Path:
        """Store the job's output under done/ and take the job off the queue."""
        try:
            self.done_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise QueueError(f"cannot create {self.done_dir}: {e}") from None
        out = self.done_dir / f"{job.id}.json"
        _write_json(out, {"job": job.to_dict(), "output": output})
        self.drop(job)
        return out

    def failed(self, job: Job, error: str) -> None:
        _write_json(job.path or self.folder / f"{job.id}.json", {**job.to_dict(), "error": error})

    def drop(self, job: Job) -> None:
        try:
            (job.path or self.folder / f"{job.id}.json").unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise QueueError(f"cannot remove job {job.id}: {e}") from None
