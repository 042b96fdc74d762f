"""fieldlog: the Textual app a vineyard scout uses on an offline handheld.

The app owns three shared things the screens use: the SQLite store (only ever
touched from the UI thread — sqlite connections are bound to their thread), the
report generator (loaded lazily in a worker thread because loading GGUF models
takes seconds, and guarded by a lock because one llama context cannot run two
generations), and an optional sync callback that the sync module wires in.

Screens: log browser (home) → sighting detail → form / generate / report; season; sync.

Power: with a power source (``run`` gives it the machine's, or ``--battery-sim``) the app polls it; a
report asked for on a critical battery is queued (``charger.py``, edgespec's job queue) and the queue is
run in a worker, one report at a time, when the source turns to charging.
Screens never push each other: they post navigation messages
(``screens/messages.py``) and the ``on_*`` handlers below push the screens.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import threading
from pathlib import Path
from typing import Any, Callable

from textual.app import App
from textual.binding import Binding

from edgespec import ModelFileError

from . import charger
from .database import Store
from .database.demo_mark import is_demo
from .demo import seed_demo
from .generator import MODELS_HELP, EngineUnavailable, ModelsMissing, default_generator_factory
from .screens.form_model import pest_names
from .screens.generate import GenerateScreen
from .screens.log import LogScreen
from .screens.messages import (
    BackgroundSync,
    EditSighting,
    GenerateReport,
    OpenReport,
    OpenSeason,
    OpenSighting,
    QueuedReportDone,
    SightingSaved,
)
from .screens.report import ReportScreen
from .screens.season import SeasonScreen
from .screens.sighting_detail import SightingDetailScreen
from .screens.sighting_form import SightingFormScreen
from .screens.sync import SyncScreen
from .sync import config as sync_config
from .sync.background import app_sync_callback
from .sync.common import ENV_SERVER, ENV_TOKEN, check_server_url

__all__ = ["FieldlogApp", "run", "MODELS_HELP", "ModelsMissing", "EngineUnavailable", "default_generator_factory"]

GeneratorFactory = Callable[[], Any]
POWER_POLL_S = 5.0
SyncCallback = Callable[[], Any]


def default_reviewer() -> str:
    name = os.environ.get("FIELDLOG_USER", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # no login name in a container: the dialog asks
        return ""


class FieldlogApp(App):
    """fieldlog: log pest sightings, generate scouting reports, browse and sync them."""

    CSS_PATH = "app.tcss"
    TITLE = "fieldlog"
    SUB_TITLE = "vineyard scouting"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f5", "open_sync", "Sync", show=False),
    ]

    def __init__(
        self,
        store: Any = None,
        *,
        db_path: str | Path | None = None,
        generator_factory: GeneratorFactory | None = None,
        sync_callback: SyncCallback | None = None,
        today: Callable[[], _dt.date] | None = None,
        pests: list[str] | None = None,
        autosync: Any = None,
        reviewer: str | None = None,
        power_source: Any = None,
        job_queue: Any = None,
    ) -> None:
        super().__init__()
        # who reviews reports on this device, prefilled in the review dialogs (FIELDLOG_USER, else the login)
        self.reviewer = reviewer if reviewer is not None else default_reviewer()
        if store is None:
            if db_path is None:
                raise ValueError("FieldlogApp needs a store or a db_path")
            store = Store(str(db_path))
            self._owns_store = True
        else:
            self._owns_store = False
        self.store = store
        self.generator_factory: GeneratorFactory = generator_factory or default_generator_factory
        self.sync_callback = sync_callback
        # the background sync (sync.background.AutoSync): its results reach the screens (BackgroundSync)
        self.autosync = autosync
        if autosync is not None:
            autosync.on_result = self.background_sync_result
        self.today = today or _dt.date.today
        self.pests = pests if pests is not None else pest_names()
        self._generator: Any = None
        self._generator_load_lock = threading.Lock()
        # held for the whole of one generation: the engine is not re-entrant
        self.generation_lock = threading.Lock()
        # the battery (edgespec.power source) and the queue of reports deferred until the charger; None: off
        self.power = charger.PowerWatch(power_source) if power_source is not None else None
        self.job_queue = job_queue
        self.charger_running = False

    # ------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        self.push_screen(LogScreen())
        if self.power is not None:
            self.poll_power()
            # a sysfs read is cheap; a few seconds is soon enough to notice the charger
            self.set_interval(POWER_POLL_S, self.poll_power)

    def on_unmount(self) -> None:
        gen, self._generator = self._generator, None
        close = getattr(gen, "close", None)
        # A generation cancelled on the way out may still be inside a llama.cpp call:
        # freeing the models under it would crash, so wait for it (bounded) first.
        if callable(close) and self.generation_lock.acquire(timeout=15):
            try:
                close()
            except Exception:
                pass
            finally:
                self.generation_lock.release()
        if self._owns_store:
            try:
                self.store.close()
            except Exception:
                pass

    # ------------------------------------------------------------------ services for screens

    def get_generator(self) -> Any:
        """The generator, created on first use. Call from a worker thread (it may load models).

        Raises ModelsMissing when the model files are not there (the factory raised
        ``edgespec.ModelFileError`` or FileNotFoundError) and EngineUnavailable for
        any other load failure. Failures are not cached, so fetching the models
        and retrying works without restarting the app.
        """
        with self._generator_load_lock:
            if self._generator is not None:
                return self._generator
            try:
                gen = self.generator_factory()
            except (ModelFileError, FileNotFoundError) as e:
                raise ModelsMissing(str(e)) from e
            except ImportError as e:
                raise EngineUnavailable(f"the report engine is not available in this install ({e})") from e
            except Exception as e:
                raise EngineUnavailable(f"{type(e).__name__}: {e}") from e
            self._generator = gen
            return gen

    def store_call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """Run a store operation; on failure tell the user and return (False, exc) instead of crashing."""
        try:
            return True, fn(*args, **kwargs)
        except Exception as e:  # StoreError, ValidationError, sqlite errors: all user-visible, none fatal
            self.notify(f"{what} failed: {e}", title="Store", severity="error", timeout=8)
            return False, e

    # ------------------------------------------------------------------ power and the charger queue

    def power_policy(self) -> Any:
        """The governor's decision now (None: this app has no power source, the generator decides)."""
        if self.power is None:
            return None
        try:
            return self.power.read().policy
        except Exception:  # an unreadable battery must not keep a report from being written
            return None

    def poll_power(self) -> None:
        """Read the power source; when it has just turned to charging, run the queued reports."""
        try:
            reading = self.power.read()
        except Exception:
            return
        if reading.plugged_in:
            self.run_charger_queue()

    def queued_reports(self) -> list[Any]:
        if self.job_queue is None:
            return []
        try:
            return charger.app_jobs(self.job_queue, self.store.path)
        except Exception:  # a broken job file is named by `edgespec queue list`; the log still opens
            return []

    def queue_report(self, sighting_id: str, note: dict) -> tuple[Any, int, int]:
        """Defer a report until the charger (raises edgespec's QueueError when the queue cannot be written)."""
        if self.job_queue is None:
            raise RuntimeError("this app has no report queue")
        return charger.queue_report(self.job_queue, self.store.path, sighting_id, note)

    def drop_queued_report(self, sighting_id: str) -> None:
        if self.job_queue is not None:
            charger.drop_report(self.job_queue, self.store.path, sighting_id)

    def run_charger_queue(self) -> None:
        """Start writing the queued reports in the background, unless that already runs or nothing waits."""
        if self.charger_running or not self.queued_reports():
            return
        self.charger_running = True
        self.run_worker(self._charger_worker, thread=True, group="charger", exit_on_error=False)

    def _charger_worker(self) -> None:
        """One queued report at a time, oldest first, while the device stays on the charger."""
        from edgespec.events import Done

        try:
            while True:
                jobs = self.queued_reports()
                if not jobs:
                    return
                if self.power is not None and not self.power.source.read().charging:
                    self.power.unplugged()  # so the next reading on the charger starts the rest
                    return
                job = jobs[0]
                sid = job.options[charger.SIGHTING_OPTION]
                try:
                    gen = self.get_generator()
                    done = None
                    with self.generation_lock:
                        # the app decided on power itself (charging), so the generator's own check is skipped
                        for ev in gen.stream_report(job.input, force=True):
                            if isinstance(ev, Done):
                                done = ev
                        if done is None:
                            raise RuntimeError("the engine stopped without finishing the report")
                        record = gen.report_record(done)
                except Exception as e:  # the job stays queued with its error, as `edgespec queue run` leaves it
                    self.call_from_thread(self._charger_failed, job, sid, f"{type(e).__name__}: {e}")
                    return
                if not self.call_from_thread(self._charger_done, job, sid, record, done):
                    return
        finally:
            self.charger_running = False

    def _charger_done(self, job: Any, sighting_id: str, record: dict, done: Any) -> bool:
        """UI thread: store the report (the store belongs to this thread), take the job off the queue.
        False when the queue should stop (the job could not be stored or taken off)."""
        rec = {k: record.get(k) for k in ("text", "model_pair", "policy", "stats", "provenance", "spans", "findings")}
        rec["text"] = rec["text"] if rec["text"] is not None else done.text
        for k in ("model_pair", "policy", "stats"):
            rec[k] = rec[k] or {}
        for k in ("provenance", "spans", "findings"):
            rec[k] = rec[k] or []
        try:
            rid = self.store.save_report(sighting_id, status="complete", **rec)
        except Exception as e:  # the sighting was revised or removed meanwhile: the job says why
            self._charger_failed(job, sighting_id, f"cannot store the report: {e}")
            return False
        ok = True
        try:
            self.job_queue.finish(job, charger.job_output(rec))
        except Exception as e:  # left queued it would be written twice: stop here and say so
            ok = False
            self.notify(f"The report was saved but its queue entry could not be cleared: {e}", severity="warning")
        from vineyard.status import status_line

        self.notify(f"Report for {charger.describe(job)} written on the charger: {status_line(rec)}",
                    title="Charger", timeout=8)
        self._deliver(sighting_id, rid)
        return ok

    def _charger_failed(self, job: Any, sighting_id: str, error: str) -> None:
        try:
            self.job_queue.failed(job, error)
        except Exception:
            pass
        self.notify(f"The queued report for {charger.describe(job)} failed and stays queued: {error}",
                    title="Charger", severity="error", timeout=10)
        self._deliver(sighting_id, None, error)

    def _deliver(self, sighting_id: str, report_id: str | None, error: str | None = None) -> None:
        for screen in self.screen_stack:  # one message each: a message is delivered once
            screen.post_message(QueuedReportDone(sighting_id, report_id, error))

    # ------------------------------------------------------------------ sync settings

    def is_demo(self) -> bool:
        try:
            return is_demo(self.store)
        except Exception:
            return False

    def sync_settings(self) -> dict[str, Any]:
        """What the Sync screen shows: the saved server, whether a token is saved (never the token),
        which environment variables override them, and where they are kept."""
        try:
            saved, error = sync_config.load_settings(), None
        except sync_config.SyncSettingsError as e:
            saved, error = sync_config.SyncSettings(), str(e)
        path = sync_config.config_path()
        try:  # "~/.config/fieldlog/sync.json" reads better than the full home path
            shown = "~/" + str(path.relative_to(Path.home()))
        except ValueError:
            shown = str(path)
        return {"server": saved.server, "has_token": bool(saved.token), "path": shown,
                "env": [v for v in (ENV_SERVER, ENV_TOKEN) if os.environ.get(v)], "error": error}

    def configure_sync(self, server: str, token: str) -> str:
        """Save the server (and the token; empty keeps the saved one) and make "Sync now" use them.

        Returns where they were saved; raises ValueError with a message for the user."""
        try:
            server = check_server_url(server)
        except Exception as e:
            raise ValueError(str(e)) from None
        try:
            saved = sync_config.load_settings()
        except sync_config.SyncSettingsError:
            saved = sync_config.SyncSettings()
        token = token.strip() or saved.token
        if not token:
            raise ValueError("a device token is needed: the office prints it with `fieldlog-server add-device NAME`")
        try:
            path = sync_config.save_settings(sync_config.SyncSettings(server, token))
        except sync_config.SyncSettingsError as e:
            raise ValueError(str(e)) from None
        # resolved again: FIELDLOG_SERVER / FIELDLOG_TOKEN still win over what was saved
        self.sync_callback = app_sync_callback(self.store)
        if self.autosync is not None:
            self.autosync.trigger()
        return str(path)

    def background_sync_result(self, result: Any) -> None:
        """AutoSync's callback (its worker thread): hand the result to the screens on the UI thread."""
        self.call_from_thread(self._deliver_background_sync, result)

    def _deliver_background_sync(self, result: Any) -> None:
        for screen in self.screen_stack:
            screen.post_message(BackgroundSync(result))

    # ------------------------------------------------------------------ navigation

    def action_open_sync(self) -> None:
        if not isinstance(self.screen, SyncScreen):
            self.push_screen(SyncScreen())

    def on_open_sighting(self, message: OpenSighting) -> None:
        self.push_screen(SightingDetailScreen(message.sighting_id))

    def on_open_season(self, message: OpenSeason) -> None:
        self.push_screen(SeasonScreen(message.block))

    def on_open_report(self, message: OpenReport) -> None:
        self.push_screen(ReportScreen(message.report_id))

    def on_edit_sighting(self, message: EditSighting) -> None:
        self.push_screen(SightingFormScreen(message.sighting))

    def on_generate_report(self, message: GenerateReport) -> None:
        self.push_screen(GenerateScreen(message.sighting))

    def on_sighting_saved(self, message: SightingSaved) -> None:
        """Replace the form (and a detail screen of the old version below it) with the fresh detail."""
        if isinstance(self.screen, SightingFormScreen):
            self.pop_screen()
        if isinstance(self.screen, SightingDetailScreen):
            if self.screen.sighting_id == message.sighting_id:
                return  # it reloads itself on resume
            self.pop_screen()
        self.push_screen(SightingDetailScreen(message.sighting_id))


def run(db_path: Path, demo: bool = False, *, sync_callback: SyncCallback | None = None,
        generator_factory: GeneratorFactory | None = None, autosync: Any = None, power_source: Any = None) -> None:
    """Start fieldlog on ``db_path`` (created if missing).

    ``demo`` fills an empty database with the sample sightings (``fieldlog_app.demo``;
    a no-op when it already has data, e.g. when ``fieldlog --demo`` seeded it first).
    ``sync_callback`` is what the Sync screen's "Sync now" runs (see screens/sync.py);
    ``autosync`` (a not yet started ``sync.background.AutoSync``) syncs in the background and its
    results refresh the screens. The caller stops it. ``power_source`` (an ``edgespec.power`` source,
    default the machine's battery) decides when reports are deferred to the charger.
    """
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(str(db_path))
    try:
        if demo:
            seed_demo(store, season=True)
        from edgespec.jobqueue import JobQueue
        from edgespec.power import PowerMonitor

        # the machine's battery unless told (--battery-sim); reports deferred on it wait in edgespec's queue
        app = FieldlogApp(store, generator_factory=generator_factory, sync_callback=sync_callback, autosync=autosync,
                          power_source=power_source or PowerMonitor(), job_queue=JobQueue())
        if autosync is not None:
            autosync.start()
        app.run()
    finally:
        store.close()
