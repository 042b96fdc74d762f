"""Reports deferred on a critical battery, written when the charger is connected.

The queue is edgespec's (``edgespec.jobqueue.JobQueue``, the one ``edgespec queue list|run|drop`` shows): a
report the app defers is a ``notes`` job holding the field note itself, plus two options naming where its
report belongs (``fieldlog_sighting``, ``fieldlog_db``). The app runs only the jobs of its own database: a
job queued by ``edgespec generate`` names its own models, which the app's loaded generator would not honour,
so those stay for ``edgespec queue run``.

``PowerWatch`` turns readings of the power source (``edgespec.power``: sysfs, or a simulated battery) into
the governor's decision and says when the source *turned* to charging, which is when the app starts on the
queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgespec.jobqueue import Job, JobQueue
from edgespec.power import Governor, PowerPolicy, PowerSource, PowerState

SIGHTING_OPTION = "fieldlog_sighting"
DB_OPTION = "fieldlog_db"


def app_jobs(queue: JobQueue, db_path: str) -> list[Job]:
    """The queued jobs whose report belongs in the database at ``db_path``, oldest first."""
    return [j for j in queue.jobs() if j.kind == "notes" and isinstance(j.input, dict)
            and j.options.get(DB_OPTION) == db_path and isinstance(j.options.get(SIGHTING_OPTION), str)]


def queue_report(queue: JobQueue, db_path: str, sighting_id: str, note: dict) -> tuple[Job, int, int]:
    """Queue the report of ``sighting_id`` (once: an already queued one is returned as it is).

    Returns (job, its position among this database's jobs, how many there are)."""
    jobs = app_jobs(queue, db_path)
    for i, j in enumerate(jobs, 1):
        if j.options.get(SIGHTING_OPTION) == sighting_id:
            return j, i, len(jobs)
    job, _ = queue.add("notes", note, {SIGHTING_OPTION: sighting_id, DB_OPTION: db_path})
    jobs = app_jobs(queue, db_path)
    return job, [j.id for j in jobs].index(job.id) + 1, len(jobs)


def drop_report(queue: JobQueue, db_path: str, sighting_id: str) -> None:
    """Take the queued report of ``sighting_id`` off the queue (the user wrote it now instead)."""
    for j in app_jobs(queue, db_path):
        if j.options.get(SIGHTING_OPTION) == sighting_id:
            queue.drop(j)


@dataclass
class PowerReading:
    state: PowerState
    policy: PowerPolicy
    plugged_in: bool  # this reading found the charger connected and the last one did not


class PowerWatch:
    """One governor across the app's life (hysteresis spans reports) over a power source."""

    def __init__(self, source: PowerSource, governor: Governor | None = None) -> None:
        self.source = source
        self.governor = governor or Governor()
        self._charging: bool | None = None  # unknown until the first reading

    def read(self) -> PowerReading:
        state = self.source.read()
        policy = self.governor.decide(state)
        # the first reading counts as a change: an app started on the charger runs what waits
        plugged = state.charging and self._charging is not True
        self._charging = state.charging
        return PowerReading(state, policy, plugged)

    def unplugged(self) -> None:
        """The queue saw the charger go (between two polls): the next charging reading is a new connection."""
        self._charging = False

    @property
    def charging(self) -> bool:
        return bool(self._charging)


def job_output(record: dict) -> dict:
    """What ``edgespec queue run`` writes to ``done/<id>.json`` for a job, from a report record."""
    keys = ("text", "stats", "model_pair", "policy", "spans", "findings")
    return {k: record.get(k) for k in keys}


def describe(job: Any) -> str:
    note = job.input if isinstance(getattr(job, "input", None), dict) else {}
    return f"{note.get('block', '?')} · {note.get('date', '?')}"
