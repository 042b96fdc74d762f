"""Power awareness: read the battery, pick a policy, account energy per report.

A handheld in a vineyard runs on a battery for a whole day. The governor turns
the battery state into a ``PowerPolicy`` (threads, draft length bounds, whether
to run now or queue until charging, whether relaxed verification is allowed)
with hysteresis so a battery hovering at a boundary does not flip the mode every
report. ``EnergyMeter`` estimates joules from process CPU time and a per-device
power profile (comparable across machines: it answers "what would this cost on
the handheld"), and adds the real RAPL counter delta when the host exposes one.

Relaxed verification is off unless the user's settings allow it: the default is
lossless in every mode.
"""

from __future__ import annotations

import os
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from . import EdgespecError

MODES = ("performance", "balanced", "saver", "critical")


class PowerConfigError(EdgespecError, ValueError):
    """A bad --power-mode, --battery-sim or power profile value."""


@dataclass(frozen=True)
class PowerState:
    source: str  # "battery" | "mains" | "simulated" | "unknown"
    percent: float | None  # battery charge 0..100, None on mains without a battery
    charging: bool  # on external power (charging, full, or "not charging" while plugged in)

    def to_dict(self) -> dict:
        return asdict(self)


class PowerSource(Protocol):
    def read(self) -> PowerState: ...


# ------------------------------------------------------------------ sources
def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


class PowerMonitor:
    """The machine's real power state from ``<sysfs_root>/class/power_supply``.

    Reads ``type`` of each supply; Battery: ``capacity`` (or energy_now/energy_full,
    charge_now/charge_full), ``status``; Mains/USB: ``online``. Unreadable or
    malformed files are skipped, never fatal. No battery at all means a mains
    machine (desktop, server, CI).
    """

    EXTERNAL_TYPES = ("Mains", "USB", "USB_C", "USB_PD", "USB_PD_DRP", "USB_DCP", "USB_CDP", "USB_ACA", "Wireless", "BrickID")

    def __init__(self, sysfs_root: str | Path = "/sys") -> None:
        self.root = Path(sysfs_root)

    def read(self) -> PowerState:
        base = self.root / "class" / "power_supply"
        try:
            supplies = sorted(p for p in base.iterdir())
        except OSError:
            supplies = []
        batteries: list[tuple[float, float | None, str]] = []  # (percent, weight, status)
        external_online = False
        for sup in supplies:
            kind = _read_text(sup / "type")
            if kind == "Battery":
                if _read_text(sup / "present") == "0" or _read_text(sup / "scope") == "Device":
                    continue  # an absent slot, or a mouse/keyboard battery
                pct, weight = self._battery_percent(sup)
                if pct is None:
                    continue
                batteries.append((pct, weight, _read_text(sup / "status") or "Unknown"))
            elif kind in self.EXTERNAL_TYPES:
                if _read_text(sup / "online") == "1":
                    external_online = True
        if not batteries:
            return PowerState("mains", None, True)
        if all(w is not None for _, w, _ in batteries) and sum(w for _, w, _ in batteries) > 0:
            total = sum(w for _, w, _ in batteries)
            percent = sum(p * w for p, w, _ in batteries) / total
        else:
            percent = sum(p for p, _, _ in batteries) / len(batteries)
        statuses = {s for _, _, s in batteries}
        charging = external_online or bool(statuses & {"Charging", "Full", "Not charging"})
        if "Discharging" in statuses and not external_online:
            charging = False
        return PowerState("battery", round(percent, 1), charging)

    @staticmethod
    def _battery_percent(sup: Path) -> tuple[float | None, float | None]:
        full = None
        for now_name, full_name in (("energy_now", "energy_full"), ("charge_now", "charge_full")):
            now_s, full_s = _read_text(sup / now_name), _read_text(sup / full_name)
            if now_s and full_s and now_s.lstrip("-").isdigit() and full_s.isdigit() and int(full_s) > 0:
                full = float(full_s)
                pct_from_energy = max(0.0, min(100.0, 100.0 * float(now_s) / full))
                break
        else:
            pct_from_energy = None
        cap = _read_text(sup / "capacity")
        if cap is not None and re.fullmatch(r"\d{1,3}", cap):
            return max(0.0, min(100.0, float(cap))), full
        return pct_from_energy, full

    def energy_uj(self) -> int | None:
        return read_rapl_uj(self.root)


class SimulatedPower:
    """A battery for tests and demos (``--battery-sim 35:charging``); ``set`` moves it."""

    def __init__(self, percent: float, charging: bool = False) -> None:
        self.set(percent, charging)

    def set(self, percent: float, charging: bool | None = None) -> None:
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise PowerConfigError(f"battery percent must be a number in 0..100, got {percent!r}")
        self.percent = float(percent)
        if charging is not None:
            self.charging = bool(charging)

    def read(self) -> PowerState:
        return PowerState("simulated", self.percent, self.charging)


class MainsPower:
    """Always on mains: the profile for a desktop or the farm-office server."""

    def read(self) -> PowerState:
        return PowerState("mains", None, True)


def parse_battery_sim(spec: str) -> SimulatedPower:
    """``"35"``, ``"35%"``, ``"35:charging"`` or ``"35:discharging"`` -> SimulatedPower."""
    if not isinstance(spec, str):
        raise PowerConfigError(f"--battery-sim expects PERCENT[:charging], got {spec!r}")
    m = re.fullmatch(r"\s*(\d{1,3}(?:\.\d+)?)\s*%?\s*(?::\s*(charging|discharging|plugged|unplugged|ac|battery)\s*)?", spec, re.I)
    if not m:
        raise PowerConfigError(f"--battery-sim expects PERCENT[:charging|:discharging], got {spec!r}")
    pct = float(m.group(1))
    if pct > 100:
        raise PowerConfigError(f"--battery-sim percent must be 0..100, got {pct:g}")
    charging = (m.group(2) or "discharging").lower() in ("charging", "plugged", "ac")
    return SimulatedPower(pct, charging)


# ------------------------------------------------------------------ governor
@dataclass(frozen=True)
class PowerPolicy:
    mode: str
    n_threads: int
    max_draft: int
    min_draft: int
    run_now: bool  # False: wait for the charger (the CLI queues the job: edgespec/jobqueue.py)
    relax_unverified: bool  # True only when the user's settings allow it (never by default)
    reason: str = ""
    forced: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GovernorConfig:
    """Mode boundaries (battery %) and what each mode allows.

    Shorter drafts in saver modes: on a battery every rejected draft token is an
    oracle row computed for nothing, so the draft bound shrinks as charge drops.
    """

    balanced_min: float = 50.0  # >= this on battery: balanced
    saver_min: float = 10.0  # >= this: saver; below: critical (a handheld at 15% still writes reports, frugally)
    hysteresis: float = 3.0  # points above a boundary needed to move back up
    max_threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    allow_relaxed: bool = False  # the user's setting; relaxed verification only in saver/critical
    queue_when_critical: bool = True
    drafts: dict = field(default_factory=lambda: {
        "performance": (1, 16), "balanced": (1, 8), "saver": (1, 4), "critical": (1, 2),
    })

    def __post_init__(self) -> None:
        if not 0 <= self.saver_min < self.balanced_min <= 100:
            raise PowerConfigError(f"need 0 <= saver_min < balanced_min <= 100, got {self.saver_min}, {self.balanced_min}")
        if not 0 <= self.hysteresis <= 20:
            raise PowerConfigError(f"hysteresis must be 0..20 points, got {self.hysteresis}")
        if isinstance(self.max_threads, bool) or not isinstance(self.max_threads, int) or self.max_threads < 1:
            raise PowerConfigError(f"max_threads must be a whole number >= 1, got {self.max_threads!r}")
        for mode in MODES:
            lo, hi = self.drafts.get(mode, (None, None))
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
                raise PowerConfigError(f"drafts[{mode!r}] must be (min, max) whole numbers with min <= max")


class Governor:
    """Maps a PowerState to a PowerPolicy, with hysteresis between battery modes."""

    def __init__(self, config: GovernorConfig | None = None, *, force_mode: str | None = None) -> None:
        self.config = config or GovernorConfig()
        if force_mode is not None and force_mode not in MODES:
            raise PowerConfigError(f"--power-mode must be one of {', '.join(MODES)}, got {force_mode!r}")
        self.force_mode = force_mode
        self._battery_mode: str | None = None  # last mode chosen on battery, for hysteresis

    def _battery_mode_for(self, percent: float) -> str:
        c = self.config
        order = ("critical", "saver", "balanced")
        lower = {"saver": c.saver_min, "balanced": c.balanced_min}  # entering thresholds from below
        plain = "balanced" if percent >= c.balanced_min else "saver" if percent >= c.saver_min else "critical"
        prev = self._battery_mode
        if prev is None or prev not in order:
            return plain
        if order.index(plain) > order.index(prev):
            # Moving up (e.g. after a short charge): only once clearly past the boundary.
            target = prev
            for m in order[order.index(prev) + 1 :]:
                if percent >= lower[m] + c.hysteresis:
                    target = m
            return target
        return plain  # moving down happens at the boundary itself: save power promptly

    def decide(self, state: PowerState) -> PowerPolicy:
        c = self.config
        if self.force_mode is not None:
            mode = self.force_mode
            reason = f"forced by --power-mode {mode}"
        elif state.charging or state.percent is None:
            mode = "performance"
            reason = "on mains" if state.percent is None else f"charging at {state.percent:g}%"
            self._battery_mode = None
        else:
            mode = self._battery_mode_for(float(state.percent))
            self._battery_mode = mode
            reason = f"on battery at {state.percent:g}%"
        return self.policy_for(mode, state, reason=reason, forced=self.force_mode is not None)

    def policy_for(self, mode: str, state: PowerState | None = None, *, reason: str = "", forced: bool = False) -> PowerPolicy:
        if mode not in MODES:
            raise PowerConfigError(f"unknown power mode {mode!r}; expected one of {', '.join(MODES)}")
        c = self.config
        threads = {"performance": c.max_threads, "balanced": c.max_threads, "saver": max(1, c.max_threads // 2), "critical": 1}[mode]
        lo, hi = c.drafts[mode]
        plugged = bool(state and state.charging)
        run_now = not (mode == "critical" and c.queue_when_critical and not plugged)
        relax = c.allow_relaxed and mode in ("saver", "critical")
        if not run_now:
            reason = (reason + "; " if reason else "") + "waits for the charger"
        return PowerPolicy(mode, threads, hi, lo, run_now, relax, reason, forced)


def policy_for(
    *,
    mode: str | None = None,
    battery_sim: str | None = None,
    allow_relaxed: bool = False,
    sysfs_root: str | Path = "/sys",
    config: GovernorConfig | None = None,
) -> PowerPolicy:
    """One decision for a CLI run: ``--power-mode`` forces, ``--battery-sim`` replaces the real battery.

    A long-running app should keep one ``Governor`` instead, so hysteresis spans reports.
    """
    cfg = config or GovernorConfig(allow_relaxed=allow_relaxed)
    if config is not None and allow_relaxed != cfg.allow_relaxed:
        cfg = GovernorConfig(**{**asdict(cfg), "allow_relaxed": allow_relaxed})
    source: PowerSource = parse_battery_sim(battery_sim) if battery_sim is not None else PowerMonitor(sysfs_root)
    return Governor(cfg, force_mode=mode).decide(source.read())


# ---------------------------------------------------------------- energy
@dataclass(frozen=True)
class DevicePowerProfile:
    """Watts a device draws: per fully busy core, and at idle while awake."""

    name: str = "handheld-2core"
    watts_per_busy_core: float = 1.6
    idle_watts: float = 0.7
    cores: int = 2

    def __post_init__(self) -> None:
        for k in ("watts_per_busy_core", "idle_watts"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise PowerConfigError(f"power profile {k} must be a number >= 0, got {v!r}")
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise PowerConfigError(f"power profile cores must be a whole number >= 1, got {self.cores!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "DevicePowerProfile":
        if not isinstance(d, dict):
            raise PowerConfigError("a power profile is an object with watts_per_busy_core, idle_watts, cores")
        unknown = set(d) - {"name", "watts_per_busy_core", "idle_watts", "cores"}
        if unknown:
            raise PowerConfigError(f"unknown power profile field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def joules(self, cpu_s: float, wall_s: float) -> float:
        """CPU seconds at busy-core power plus wall seconds at idle power (the device stays awake)."""
        busy = min(cpu_s, wall_s * self.cores) if wall_s > 0 else cpu_s
        return busy * self.watts_per_busy_core + wall_s * self.idle_watts


DEFAULT_PROFILE = DevicePowerProfile()


def read_rapl_uj(sysfs_root: str | Path = "/sys") -> int | None:
    """Sum of top-level RAPL package counters (µJ), or None when none is readable."""
    base = Path(sysfs_root) / "class" / "powercap"
    try:
        zones = sorted(base.iterdir())
    except OSError:
        return None
    total = None
    for z in zones:
        if z.name.count(":") != 1:  # intel-rapl:0 is a package; intel-rapl:0:0 is inside it
            continue
        v = _read_text(z / "energy_uj")
        if v is not None and v.isdigit():
            total = (total or 0) + int(v)
    return total


def _rapl_range_uj(sysfs_root: Path) -> int | None:
    base = sysfs_root / "class" / "powercap"
    try:
        zones = sorted(base.iterdir())
    except OSError:
        return None
    total = None
    for z in zones:
        if z.name.count(":") != 1:
            continue
        v = _read_text(z / "max_energy_range_uj")
        if v is not None and v.isdigit():
            total = (total or 0) + int(v)
    return total


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process, every thread (llama.cpp's included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class EnergyReading:
    cpu_s: float
    wall_s: float
    energy_j: float  # from the device profile
    rapl_j: float | None  # measured on this host, when readable (whole package, all processes)
    tokens: int | None = None
    profile: str = DEFAULT_PROFILE.name

    @property
    def joules_per_token(self) -> float | None:
        return self.energy_j / self.tokens if self.tokens else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["joules_per_token"] = self.joules_per_token
        for k in ("cpu_s", "wall_s", "energy_j", "rapl_j", "joules_per_token"):
            if d[k] is not None:
                d[k] = round(d[k], 6)
        return d


class EnergyMeter:
    """``with EnergyMeter() as m: ...`` then ``m.reading`` (joules, joules per token via ``m.tokens = n``)."""

    def __init__(
        self,
        profile: DevicePowerProfile = DEFAULT_PROFILE,
        *,
        sysfs_root: str | Path = "/sys",
        cpu_clock: Callable[[], float] = process_cpu_seconds,
        wall_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.profile = profile
        self.root = Path(sysfs_root)
        self._cpu = cpu_clock
        self._wall = wall_clock
        self.tokens: int | None = None
        self.reading: EnergyReading | None = None
        self._start: tuple[float, float, int | None] | None = None

    def __enter__(self) -> "EnergyMeter":
        self.reading = None
        self._start = (self._cpu(), self._wall(), read_rapl_uj(self.root))
        return self

    def __exit__(self, *exc) -> None:
        if self.reading is None:  # stop() may already have been called when the last event arrived
            self.stop()

    # Shortcuts for stats: valid after stop() / the with-block.
    @property
    def joules(self) -> float | None:
        return self.reading.energy_j if self.reading else None

    @property
    def cpu_s(self) -> float | None:
        return self.reading.cpu_s if self.reading else None

    @property
    def wall_s(self) -> float | None:
        return self.reading.wall_s if self.reading else None

    @property
    def rapl_j(self) -> float | None:
        return self.reading.rapl_j if self.reading else None

    def stop(self) -> EnergyReading:
        if self._start is None:
            raise RuntimeError("EnergyMeter.stop() before start (use it as a context manager)")
        cpu0, wall0, rapl0 = self._start
        cpu_s = max(0.0, self._cpu() - cpu0)
        wall_s = max(0.0, self._wall() - wall0)
        rapl1 = read_rapl_uj(self.root) if rapl0 is not None else None
        rapl_j = None
        if rapl0 is not None and rapl1 is not None:
            delta = rapl1 - rapl0
            if delta < 0:  # the counter wrapped
                rng = _rapl_range_uj(self.root)
                delta = delta + rng if rng else None
            rapl_j = delta / 1e6 if delta is not None else None
        self.reading = EnergyReading(cpu_s, wall_s, self.profile.joules(cpu_s, wall_s), rapl_j, self.tokens, self.profile.name)
        return self.reading

    def set_tokens(self, n: int) -> None:
        self.tokens = n
        if self.reading is not None:
            self.reading.tokens = n
