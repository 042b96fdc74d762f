"""Office users, their sessions, the audit log and the office's decisions (reviews, archive, delete).

Kept apart from device tokens: a device token uploads (and, with the "reader"
role, reads through /v1); a person in the office logs in with a name and a
password. Passwords are hashed with argon2id (argon2-cffi, its default
parameters); a session is a random token in an HttpOnly cookie whose sha256 is
stored, so a copied database holds no usable session, and each session has its
own CSRF token that every form posts back.

Roles: a *viewer* reads every page and export; a *manager* also approves or
flags reports, archives or deletes sightings and adds or revokes devices.
Everything a person does that changes something is one row in ``audit``.

All tables live in the server's database (schema in fieldlog_app/sync/server.py).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fieldlog_app.database.canonical import utc_now
from fieldlog_app.sync.server import ServerDB, ServerError

ROLES = ("viewer", "manager")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte "password" is a denial of service
SESSION_HOURS = 12
REVIEW_STATUSES = ("approved", "flagged")
MARK_STATES = ("archived", "deleted")
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_hasher = PasswordHasher()
# verified against when the name is unknown, so a wrong name costs as long as a wrong password
_DUMMY_HASH = _hasher.hash("not a password of anyone " + secrets.token_hex(8))


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_at: str


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _iso(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ServerError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ServerError(f"a password has at most {MAX_PASSWORD} characters")


class Office:
    """The office's data on a ServerDB (one short-lived connection per call, like ServerDB)."""

    def __init__(self, sdb: ServerDB):
        self.sdb = sdb

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, password: str, role: str, *, actor: str = "cli") -> User:
        name = (name or "").strip()
        if not _USER_NAME.match(name):
            raise ServerError(f"user name {name!r}: use 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
        if role not in ROLES:
            raise ServerError(f"role {role!r}: use one of {', '.join(ROLES)}")
        check_password(password)
        pw_hash = _hasher.hash(password)
        with self.sdb.transaction() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise ServerError(f"user {name!r} already exists")
            uid = conn.execute("INSERT INTO users (name, password_hash, role, created_at) VALUES (?, ?, ?, ?) "
                               "RETURNING id", (name, pw_hash, role, utc_now())).fetchone()["id"]
            self._audit(conn, actor, "user-add", name, f"role {role}")
        return User(uid, name, role)

    def disable_user(self, name: str, *, actor: str = "cli") -> None:
        with self.sdb.transaction() as conn:
            row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ServerError(f"no user named {name!r}")
            conn.execute("UPDATE users SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL", (utc_now(), row["id"]))
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (row["id"],))
            self._audit(conn, actor, "user-disable", name)

    def list_users(self) -> list[dict]:
        with self.sdb.connect() as conn:
            return [dict(r) for r in conn.execute("SELECT name, role, created_at, disabled_at FROM users ORDER BY name")]

    def verify_login(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs and they are not disabled, else None (same cost either way)."""
        if not isinstance(name, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            return None
        with self.sdb.connect() as conn:
            row = conn.execute("SELECT id, name, role, password_hash, disabled_at FROM users WHERE name = ?",
                               (name.strip(),)).fetchone()
        try:
            _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row["disabled_at"] is not None:
            return None
        if _hasher.check_needs_rehash(row["password_hash"]):  # parameters raised since: upgrade on the next login
            with self.sdb.transaction() as conn:
                conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"]))
        return User(row["id"], row["name"], row["role"])

    # ------------------------------------------------------------------ sessions
    def start_session(self, user: User) -> tuple[str, Session]:
        """A new session: (the cookie value, shown to nobody else; the session)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = _dt.datetime.now(_dt.timezone.utc)
        expires = _iso(now + _dt.timedelta(hours=SESSION_HOURS))
        with self.sdb.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (_iso(now),))
            conn.execute("INSERT INTO sessions (token_sha256, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                         (_sha(token), user.id, csrf, _iso(now), expires))
            self._audit(conn, user.name, "login")
        return token, Session(user, csrf, expires)

    def session(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        with self.sdb.connect() as conn:
            row = conn.execute(
                "SELECT s.csrf, s.expires_at, u.id, u.name, u.role, u.disabled_at FROM sessions s "
                "JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = ?", (_sha(token),)).fetchone()
        if row is None or row["disabled_at"] is not None or row["expires_at"] < _iso(_dt.datetime.now(_dt.timezone.utc)):
            return None
        return Session(User(row["id"], row["name"], row["role"]), row["csrf"], row["expires_at"])

    def end_session(self, token: str | None) -> None:
        if not token:
            return
        with self.sdb.transaction() as conn:
            row = conn.execute("SELECT u.name FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = ?",
                               (_sha(token),)).fetchone()
            conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_sha(token),))
            if row:
                self._audit(conn, row["name"], "logout")

    # ------------------------------------------------------------------ audit
    @staticmethod
    def _audit(conn, actor: str, action: str, target: str = "", detail: str = "") -> None:
        conn.execute("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                     (utc_now(), actor, action, target, detail[:2000]))

    def audit(self, actor: str, action: str, target: str = "", detail: str = "") -> None:
        with self.sdb.transaction() as conn:
            self._audit(conn, actor, action, target, detail)

    def audit_log(self, limit: int = 200) -> list[dict]:
        with self.sdb.connect() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))]

    # ------------------------------------------------------------------ decisions
    def review(self, user: User, report_id: str, status: str, note: str = "") -> None:
        """Approve or flag a report (manager only); the latest review is the report's status."""
        if not user.is_manager:
            raise PermissionError("only a manager reviews reports")
        if status not in REVIEW_STATUSES:
            raise ServerError(f"review {status!r}: use one of {', '.join(REVIEW_STATUSES)}")
        if not self.sdb.list_items(kind="report", item_id=report_id, limit=1):
            raise ServerError(f"no report {report_id!r} on this server")
        note = (note or "").strip()[:500]
        from .check_queue import now_utc

        with self.sdb.transaction() as conn:
            conn.execute("INSERT INTO reviews (report_id, status, reviewer, at, note) VALUES (?, ?, ?, ?, ?)",
                         (report_id, status, user.name, utc_now(), note))
            # an approval cancels a policy rewrite the check announced: the device's next fetch must hear of it
            conn.execute("UPDATE office_checks SET updated_at = ? WHERE report_id = ?", (now_utc(), report_id))
            self._audit(conn, user.name, {"approved": "report-approve", "flagged": "report-flag"}[status], report_id,
                        note)

    def reviews(self, report_id: str) -> list[dict]:
        with self.sdb.connect() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM reviews WHERE report_id = ? ORDER BY id DESC",
                                                   (report_id,))]

    def mark(self, user: User, chain_id: str, state: str | None) -> None:
        """Archive, delete (state) or restore (None) a sighting with all its versions and reports (manager only).

        Nothing is erased: the rows stay (so a device re-sending them gets a duplicate receipt, not a second
        copy), but a deleted sighting leaves every page, /v1 read and export, and the audit log says who did it."""
        if not user.is_manager:
            raise PermissionError("only a manager archives or deletes sightings")
        if state is not None and state not in MARK_STATES:
            raise ServerError(f"{state!r}: use one of {', '.join(MARK_STATES)}")
        if not self.sdb.list_items(kind="sighting", chain_id=chain_id, limit=1, include_deleted=True):
            raise ServerError(f"no sighting {chain_id!r} on this server")
        with self.sdb.transaction() as conn:
            if state is None:
                conn.execute("DELETE FROM marks WHERE chain_id = ?", (chain_id,))
            else:
                conn.execute("INSERT INTO marks (chain_id, state, marked_by, at) VALUES (?, ?, ?, ?) ON CONFLICT (chain_id) "
                             "DO UPDATE SET state = excluded.state, marked_by = excluded.marked_by, at = excluded.at",
                             (chain_id, state, user.name, utc_now()))
            self._audit(conn, user.name, {"archived": "sighting-archive", "deleted": "sighting-delete",
                                          None: "sighting-restore"}[state], chain_id)
