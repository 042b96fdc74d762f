"""This device's sync settings (farm-office server URL and device token), kept in the user config.

The app's Sync screen writes them; ``FIELDLOG_SERVER`` / ``FIELDLOG_TOKEN`` (and
``--server`` / ``--token``) still override them. The file is JSON, written
atomically with mode 0600 (the token is a secret):
``$FIELDLOG_CONFIG`` or ``<user config dir>/fieldlog/sync.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV_CONFIG = "FIELDLOG_CONFIG"
MAX_BYTES = 64 * 1024


class SyncSettingsError(Exception):
    """The settings file cannot be read or written (the message names it)."""


def config_path() -> Path:
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("fieldlog")) / "sync.json"


@dataclass(frozen=True)
class SyncSettings:
    server: str = ""
    token: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.server and self.token)


def load_settings(path: str | os.PathLike | None = None) -> SyncSettings:
    """The saved settings; empty when there is no file. A corrupt file is an error naming it."""
    p = Path(path) if path is not None else config_path()
    try:
        if p.stat().st_size > MAX_BYTES:
            raise SyncSettingsError(f"{p}: larger than {MAX_BYTES} bytes, not a fieldlog sync settings file")
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SyncSettings()
    except (OSError, ValueError) as e:
        raise SyncSettingsError(f"{p}: cannot read the sync settings ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k, ""), str) for k in ("server", "token")):
        raise SyncSettingsError(f"{p}: expected {{\"server\": URL, \"token\": TOKEN}}")
    return SyncSettings(data.get("server", "").strip(), data.get("token", "").strip())


def save_settings(settings: SyncSettings, path: str | os.PathLike | None = None) -> Path:
    """Write the settings atomically, readable by this user only."""
    p = Path(path) if path is not None else config_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    except OSError as e:
        raise SyncSettingsError(f"cannot write {p}: {e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp's 0600 is what a token file wants
            json.dump({"server": settings.server, "token": settings.token}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SyncSettingsError(f"cannot write {p}: {e}") from None
    return p
