"""Live J/request of the progress display: the pure estimate, the tally fed by the NVML meter
through its stand-in binding (a GPU at 100 W, then 300 W), and the off-terminal line."""

import io
import time

import pytest

from harness.energy.meters import NvmlMeter
from harness.progress import EnergyTally, LiveEnergy, PlainProgress, QuietProgress, live_j_per_request
from harness.records import PowerSample, RequestRecord
from tests.unit.energy.test_meters import FakeNvml


def test_j_per_request_is_mean_power_over_the_completion_rate():
    assert live_j_per_request(300.0, completed=10, elapsed_s=2.0) == (60.0, None)
    assert live_j_per_request(300.0, completed=10, elapsed_s=2.0, idle_power_w=100.0) == (60.0, 40.0)
    assert live_j_per_request(None, 10, 2.0) == (None, None)
    assert live_j_per_request(300.0, 0, 2.0, 100.0) == (None, None)


def test_tally_integrates_only_inside_its_window_per_gpu():
    tally = EnergyTally(start_ns=1_000_000_000, end_ns=3_000_000_000)
    samples = [PowerSample(t * 1_000_000_000, gpu, 100.0 * (gpu + 1)) for t in range(5) for gpu in (0, 1)]
    tally.add(samples[:5])
    tally.add(samples[5:])  # batch boundaries do not matter
    assert tally.energy_j == {0: pytest.approx(200.0), 1: pytest.approx(400.0)}
    assert tally.mean_power_w() == pytest.approx(300.0)  # summed over GPUs


def test_live_energy_from_the_nvml_meter():
    nv = FakeNvml(gpus=("GPU-aaa",))
    meter = NvmlMeter(["0"], rate_hz=200, nvml=nv, probe_s=0.02)
    live = LiveEnergy()
    meter.start()
    idle_start = time.monotonic_ns()
    step_ns = int(nv.step_at * 1e9)
    time.sleep(max(0.0, nv.step_at - time.monotonic() - 0.03))
    live.idle_window(idle_start, step_ns - 10_000_000)  # before the step even if this thread ran late
    live.add(meter.drain())  # the idle batch, drained after the idle window as the run loop does
    time.sleep(nv.step_at + 0.05 - time.monotonic())
    live.begin_run(time.monotonic_ns())
    for _ in range(4):
        time.sleep(0.1)
        live.add(meter.drain())
    live.add(meter.stop())
    now = time.monotonic_ns()
    elapsed_s = (now - live.run_start_ns) / 1e9
    total, above = live.per_request(completed=8, now_ns=now)
    assert live.idle.mean_power_w() == pytest.approx(100.0, abs=1.0)
    assert live.run.mean_power_w() == pytest.approx(300.0, abs=1.0) and live.run_start_ns > step_ns
    assert total == pytest.approx(300.0 * elapsed_s / 8, rel=0.01)
    assert above == pytest.approx(200.0 * elapsed_s / 8, rel=0.02)


def _record(ok=True):
    fields = dict.fromkeys(RequestRecord.__dataclass_fields__)
    return RequestRecord(**{**fields, "status": "ok" if ok else "http_5xx"})


def test_the_plain_line_shows_j_per_request_every_few_seconds_and_quiet_shows_nothing():
    live = LiveEnergy()
    live.idle_window(0, 10**9)
    live.add([PowerSample(0, 0, 50.0), PowerSample(10**9, 0, 50.0)])
    start = time.monotonic_ns() - 2 * 10**9
    live.begin_run(start)
    live.add([PowerSample(start, 0, 250.0), PowerSample(start + 10**9, 0, 250.0)])
    out = io.StringIO()
    progress = PlainProgress(out, every_s=3600)
    progress.watch(live)
    progress.begin(3, "run")
    progress.advance(_record())
    assert out.getvalue().count("\n") == 1  # not one line per request
    progress.advance(_record(ok=False))
    progress.advance(_record())  # the last one always prints
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("[3/3]") and "1 failed" in line
    j = float(line.split(", ")[2].split()[0])
    assert j == pytest.approx(250.0 * 2 / 3, rel=0.05) and "above idle" in line
    quiet_out = io.StringIO()
    quiet = QuietProgress(quiet_out)
    quiet.watch(live)
    quiet.begin(1, "run")
    quiet.advance(_record())
    assert quiet_out.getvalue() == ""
