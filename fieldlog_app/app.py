"""fieldlog: the Textual app a vineyard scout uses on an offline handheld.

The app owns three shared things the screens use: the SQLite store (only ever
touched from the UI thread — sqlite connections are bound to their thread), the
report generator (loaded lazily in a worker thread because loading GGUF models
takes seconds, and guarded by a lock because one llama context cannot run two
generations), and an optional sync callback that the sync module wires in.

Screens: log browser (home) → sighting detail → form / generate / report; season; sync.
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

    # ------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        self.push_screen(LogScreen())

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
        generator_factory: GeneratorFactory | None = None, autosync: Any = None) -> None:
    """Start fieldlog on ``db_path`` (created if missing).

    ``demo`` fills an empty database with the sample sightings (``fieldlog_app.demo``;
    a no-op when it already has data, e.g. when ``fieldlog --demo`` seeded it first).
    ``sync_callback`` is what the Sync screen's "Sync now" runs (see screens/sync.py);
    ``autosync`` (a not yet started ``sync.background.AutoSync``) syncs in the background and its
    results refresh the screens. The caller stops it.
    """
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(str(db_path))
    try:
        if demo:
            seed_demo(store, season=True)
        app = FieldlogApp(store, generator_factory=generator_factory, sync_callback=sync_callback, autosync=autosync)
        if autosync is not None:
            autosync.start()
        app.run()
    finally:
        store.close()
