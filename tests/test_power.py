"""Power monitor (fake sysfs trees), governor decisions over battery traces, energy accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgespec.power import (
    DEFAULT_PROFILE,
    MODES,
    DevicePowerProfile,
    EnergyMeter,
    Governor,
    GovernorConfig,
    MainsPower,
    PowerConfigError,
    PowerMonitor,
    PowerState,
    SimulatedPower,
    parse_battery_sim,
    read_rapl_uj,
)


# ---------------------------------------------------------------- fake sysfs
class FakeSysfs:
    """A /sys look-alike: class/power_supply/<name>/<attr> files the test rewrites between reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "class" / "power_supply").mkdir(parents=True)

    def supply(self, name: str, **attrs) -> None:
        d = self.root / "class" / "power_supply" / name
        d.mkdir(exist_ok=True)
        for k, v in attrs.items():
            (d / k).write_text(f"{v}\n")

    def battery(self, percent: int, status: str, name: str = "BAT0", **extra) -> None:
        self.supply(name, type="Battery", present=1, capacity=percent, status=status, **extra)

    def mains(self, online: bool, name: str = "AC") -> None:
        self.supply(name, type="Mains", online=int(online))

    def rapl(self, zone: str, energy_uj: int, max_range: int = 262143328850) -> None:
        d = self.root / "class" / "powercap" / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "energy_uj").write_text(f"{energy_uj}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")


@pytest.fixture
def sysfs(tmp_path):
    return FakeSysfs(tmp_path / "sys")


# ------------------------------------------------------------------ monitor
def test_monitor_reads_battery_and_mains(sysfs):
    mon = PowerMonitor(sysfs.root)
    sysfs.battery(80, "Discharging")
    sysfs.mains(False)
    assert mon.read() == PowerState("battery", 80.0, False)
    sysfs.battery(81, "Charging")
    sysfs.mains(True)
    assert mon.read() == PowerState("battery", 81.0, True)
    sysfs.battery(100, "Full")
    assert mon.read().charging is True
    # "Not charging": plugged in but held (charge threshold) - still external power
    sysfs.battery(79, "Not charging")
    sysfs.mains(False)
    assert mon.read() == PowerState("battery", 79.0, True)


def test_monitor_without_supplies_is_mains(tmp_path, sysfs):
    assert PowerMonitor(sysfs.root).read() == PowerState("mains", None, True)
    assert PowerMonitor(tmp_path / "nothing-here").read() == PowerState("mains", None, True)


def test_monitor_skips_bad_files_and_peripheral_batteries(sysfs):
    mon = PowerMonitor(sysfs.root)
    sysfs.battery(55, "Discharging")
    sysfs.supply("hidpp_battery_0", type="Battery", scope="Device", capacity=5, status="Discharging")  # a mouse
    sysfs.supply("BAT1", type="Battery", capacity="garbage", status="Discharging")
    sysfs.supply("ucsi-source-psy", type="USB", online="1\x00junk")
    assert mon.read() == PowerState("battery", 55.0, False)


def test_monitor_energy_fallback_and_two_batteries(sysfs):
    mon = PowerMonitor(sysfs.root)
    # no capacity file: percent from energy_now/energy_full; weighted by energy_full
    sysfs.supply("BAT0", type="Battery", status="Discharging", energy_now=30_000_000, energy_full=60_000_000)
    sysfs.supply("BAT1", type="Battery", status="Discharging", energy_now=20_000_000, energy_full=20_000_000)
    st = mon.read()
    assert st.source == "battery" and st.percent == pytest.approx(62.5) and st.charging is False
    # one battery discharging while the other is full and no mains: running on battery
    sysfs.supply("BAT1", status="Full")
    assert mon.read().charging is False


def test_rapl_counters(sysfs):
    assert read_rapl_uj(sysfs.root) is None
    sysfs.rapl("intel-rapl:0", 1_000_000)
    sysfs.rapl("intel-rapl:0:0", 999_999)  # a sub-zone inside package 0: not added twice
    sysfs.rapl("intel-rapl:1", 500)
    assert read_rapl_uj(sysfs.root) == 1_000_500
    assert PowerMonitor(sysfs.root).energy_uj() == 1_000_500


# ----------------------------------------------------------------- governor
def run_trace(sysfs, gov, trace):
    mon = PowerMonitor(sysfs.root)
    out = []
    for percent, plugged in trace:
        sysfs.battery(percent, "Charging" if plugged else "Discharging")
        sysfs.mains(plugged)
        out.append(gov.decide(mon.read()))
    return out


def test_governor_over_a_discharge_trace_with_a_mid_way_charge(sysfs):
    # 100% -> 5% in steps of 5, plugged in at 40% for three readings (40, 45, 50), then unplugged.
    trace = [(p, False) for p in range(100, 40, -5)] + [(40, True), (45, True), (50, True)] + [(p, False) for p in range(50, 0, -5)]
    policies = run_trace(sysfs, Governor(GovernorConfig(max_threads=2)), trace)
    modes = [p.mode for p in policies]
    expected = (
        ["balanced"] * 11  # 100..50
        + ["saver"]  # 45
        + ["performance"] * 3  # charging 40, 45, 50
        + ["balanced"]  # unplugged at 50: a fresh battery reading, no stale hysteresis
        + ["saver"] * 8  # 45..10: a handheld at 15% still writes reports, frugally
        + ["critical"] * 1  # 5
    )
    assert modes == expected
    for (percent, plugged), pol in zip(trace, policies):
        assert pol.relax_unverified is False  # lossless unless the user allows relaxing
        assert pol.run_now is (pol.mode != "critical")  # critical on battery: wait for the charger
        assert 1 <= pol.min_draft <= pol.max_draft
        assert pol.n_threads == {"performance": 2, "balanced": 2, "saver": 1, "critical": 1}[pol.mode]
        assert ("waits for the charger" in pol.reason) is (not pol.run_now)
    # the draft bound shrinks as the battery drains
    bounds = {p.mode: p.max_draft for p in policies}
    assert bounds["performance"] > bounds["balanced"] > bounds["saver"] > bounds["critical"]
    json.dumps([p.to_dict() for p in policies])


def test_governor_hysteresis_stops_flapping(sysfs):
    gov = Governor(GovernorConfig(hysteresis=3))
    trace = [(51, False), (49, False), (51, False), (49, False), (52, False), (53, False), (51, False), (49, False)]
    modes = [p.mode for p in run_trace(sysfs, gov, trace)]
    assert modes == ["balanced", "saver", "saver", "saver", "saver", "balanced", "balanced", "saver"]
    gov = Governor(GovernorConfig(hysteresis=0))
    modes = [p.mode for p in run_trace(sysfs, gov, trace[:4])]
    assert modes == ["balanced", "saver", "balanced", "saver"]  # without hysteresis it flaps
    # around the critical boundary too
    gov = Governor()
    modes = [p.mode for p in run_trace(sysfs, gov, [(11, False), (9, False), (11, False), (12, False), (13, False)])]
    assert modes == ["saver", "critical", "critical", "critical", "saver"]


def test_relaxed_verification_needs_the_user_setting():
    gov = Governor(GovernorConfig(allow_relaxed=True))
    pols = {p: gov.decide(SimulatedPower(p, False).read()) for p in (90, 30, 10)}
    assert [pols[p].relax_unverified for p in (90, 30, 10)] == [False, True, True]
    assert gov.decide(SimulatedPower(10, True).read()).relax_unverified is False  # charging: performance, lossless
    assert all(not Governor().decide(SimulatedPower(p, False).read()).relax_unverified for p in (90, 30, 10))


def test_forced_mode_and_profiles():
    forced = Governor(force_mode="saver").decide(MainsPower().read())
    assert (forced.mode, forced.forced, forced.run_now) == ("saver", True, True)
    assert "forced" in forced.reason
    crit = Governor(force_mode="critical").decide(SimulatedPower(80, False).read())
    assert crit.run_now is False
    assert Governor(force_mode="critical").decide(SimulatedPower(80, True).read()).run_now is True
    assert Governor().decide(MainsPower().read()).mode == "performance"
    with pytest.raises(PowerConfigError, match="power-mode"):
        Governor(force_mode="turbo")
    with pytest.raises(PowerConfigError):
        Governor().policy_for("turbo")
    assert set(MODES) == {"performance", "balanced", "saver", "critical"}


@pytest.mark.parametrize(
    "kwargs",
    [dict(saver_min=60, balanced_min=50), dict(hysteresis=-1), dict(max_threads=0), dict(max_threads=True),
     dict(drafts={"performance": (4, 2), "balanced": (1, 8), "saver": (1, 4), "critical": (1, 2)})],
)
def test_governor_config_validation(kwargs):
    with pytest.raises(PowerConfigError):
        GovernorConfig(**kwargs)


@pytest.mark.parametrize(
    "spec,percent,charging",
    [("35", 35, False), ("35%", 35, False), ("35:charging", 35, True), ("35:discharging", 35, False),
     (" 100 : Charging ", 100, True), ("0", 0, False), ("12.5:plugged", 12.5, True)],
)
def test_parse_battery_sim(spec, percent, charging):
    st = parse_battery_sim(spec).read()
    assert st == PowerState("simulated", float(percent), charging)


@pytest.mark.parametrize("spec", ["", "abc", "101", "35:sideways", "-5", "35:charging:extra", None])
def test_parse_battery_sim_rejects(spec):
    with pytest.raises(PowerConfigError):
        parse_battery_sim(spec)


def test_simulated_power_validates():
    sim = SimulatedPower(50)
    sim.set(20)
    assert sim.read() == PowerState("simulated", 20.0, False)
    with pytest.raises(PowerConfigError):
        sim.set(120)
    with pytest.raises(PowerConfigError):
        SimulatedPower("full")


# ------------------------------------------------------------------- energy
class Clock:
    def __init__(self, *values):
        self.values = list(values)

    def __call__(self):
        return self.values.pop(0)


def test_energy_meter_with_the_device_profile(tmp_path):
    prof = DevicePowerProfile("test", watts_per_busy_core=2.0, idle_watts=0.5, cores=2)
    with EnergyMeter(prof, sysfs_root=tmp_path, cpu_clock=Clock(10.0, 13.0), wall_clock=Clock(100.0, 102.0)) as m:
        m.tokens = 60
    r = m.reading
    assert (r.cpu_s, r.wall_s, r.rapl_j) == (3.0, 2.0, None)
    assert r.energy_j == pytest.approx(3.0 * 2.0 + 2.0 * 0.5)
    assert r.joules_per_token == pytest.approx(7.0 / 60)
    # CPU time beyond cores x wall (clock skew) is capped: a device cannot be busier than its cores
    assert prof.joules(cpu_s=10.0, wall_s=1.0) == pytest.approx(2 * 1.0 * 2.0 + 1.0 * 0.5)
    json.dumps(r.to_dict())


def test_energy_meter_adds_rapl_delta_and_handles_wraparound(sysfs):
    sysfs.rapl("intel-rapl:0", 5_000_000, max_range=10_000_000)
    with EnergyMeter(sysfs_root=sysfs.root, cpu_clock=Clock(0.0, 1.0), wall_clock=Clock(0.0, 1.0)) as m:
        sysfs.rapl("intel-rapl:0", 7_500_000, max_range=10_000_000)
    assert m.reading.rapl_j == pytest.approx(2.5)
    with EnergyMeter(sysfs_root=sysfs.root, cpu_clock=Clock(0.0, 1.0), wall_clock=Clock(0.0, 1.0)) as m:
        sysfs.rapl("intel-rapl:0", 500_000, max_range=10_000_000)  # wrapped past 10 J
    assert m.reading.rapl_j == pytest.approx(3.0)


def test_energy_meter_measures_real_cpu_time():
    with EnergyMeter() as m:
        x = 0
        for i in range(300_000):
            x += i * i
    m.set_tokens(10)
    r = m.reading
    assert r.cpu_s > 0 and r.wall_s > 0 and r.energy_j > 0
    assert r.joules_per_token == pytest.approx(r.energy_j / 10)
    assert r.profile == DEFAULT_PROFILE.name
    with pytest.raises(RuntimeError):
        EnergyMeter().stop()


def test_device_profile_validation():
    assert DevicePowerProfile.from_dict({"name": "pi", "watts_per_busy_core": 1.0, "idle_watts": 2.7, "cores": 4}).cores == 4
    for bad in ({"watts_per_busy_core": -1}, {"cores": 0}, {"idle_watts": "lots"}, {"volts": 5}):
        with pytest.raises(PowerConfigError):
            DevicePowerProfile.from_dict(bad)
    with pytest.raises(PowerConfigError):
        DevicePowerProfile.from_dict([1, 2])


def test_policy_for_one_shot_decisions(sysfs):
    from edgespec.power import policy_for

    assert policy_for(battery_sim="4").mode == "critical" and policy_for(battery_sim="4").run_now is False
    assert policy_for(battery_sim="15").mode == "saver" and policy_for(battery_sim="15").run_now is True
    assert policy_for(battery_sim="10:charging").mode == "performance"
    assert policy_for(battery_sim="30", allow_relaxed=True).relax_unverified is True
    assert policy_for(battery_sim="30").relax_unverified is False
    assert policy_for(mode="balanced", battery_sim="5").mode == "balanced"
    sysfs.battery(35, "Discharging")
    assert policy_for(sysfs_root=sysfs.root).mode == "saver"
    assert policy_for(sysfs_root=sysfs.root / "none").mode == "performance"  # no battery: mains
    with pytest.raises(PowerConfigError):
        policy_for(mode="eco")


def test_energy_meter_stop_inside_the_block_keeps_that_reading(tmp_path):
    with EnergyMeter(sysfs_root=tmp_path, cpu_clock=Clock(0.0, 1.0), wall_clock=Clock(0.0, 2.0)) as m:
        m.stop()  # the last event arrived; later consumer time must not be billed
    assert (m.cpu_s, m.wall_s) == (1.0, 2.0) and m.joules == pytest.approx(DEFAULT_PROFILE.joules(1.0, 2.0))
    assert m.rapl_j is None
    assert EnergyMeter().joules is None
