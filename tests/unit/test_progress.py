"""Live J/request of the progress display: the pure estimate, the tally fed by the NVML meter
through its stand-in binding (a GPU at 100 W, then 300 W), and the off-terminal line."""

import io
import time

import pytest

from harness.energy.meters import NvmlMeter
from harness.progress import EnergyTally, LiveEnergy, PlainProgress, QuietProgress, live_j_per_request
from harness.records import PowerSample, RequestRecord
from tests.unit.energy.test_meters import FakeNvml, drain_until


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
    time.sleep(0.1)
    idle = drain_until(meter, lambda samples: len(samples) >= 2)
    # The windows are drawn on the readings themselves, so that no interpolation across the step
    # falls into either: idle from the first reading to the last one drained before the step, the run
    # from the first reading at 300 W (every later one is too).
    live.idle_window(idle[0].t_ns, idle[-1].t_ns)
    live.add(idle)  # the idle batch, added after the idle window is set as the run loop does
    nv.step()
    stepped = drain_until(meter, lambda samples: any(s.power_w >= 300 for s in samples))
    live.begin_run(next(s.t_ns for s in stepped if s.power_w >= 300))
    live.add(stepped)
    for _ in range(4):
        time.sleep(0.1)
        live.add(meter.drain())
    live.add(meter.stop())
    now = time.monotonic_ns()
    elapsed_s = (now - live.run_start_ns) / 1e9
    total, above = live.per_request(completed=8, now_ns=now)
    assert live.idle.mean_power_w() == pytest.approx(100.0, abs=1.0)
    assert live.run.mean_power_w() == pytest.approx(300.0, abs=1.0)
    assert total == pytest.approx(300.0 * elapsed_s / 8, rel=0.01)
    assert above == pytest.approx(200.0 * elapsed_s / 8, rel=0.02)


def _record(ok=True):
    fields = dict.fromkeys(RequestRecord.__dataclass_fields__)
    return RequestRecord(**{**fields, "status": "ok" if ok else "http_5xx"})


def test_the_plain_line_shows_j_per_request_every_few_seconds_and_quiet_shows_nothing():
    live = LiveEnergy()
    live.idle_window(0, 10**9)
    live.add([PowerSample(0, 0, 50.0), PowerSample(10**9, 0, 50.0)])
    start = time.monotonic_ns() - 2 * 10**9  # the run began 2 s ago
    live.begin_run(start)
    live.add([PowerSample(start, 0, 250.0), PowerSample(start + 10**9, 0, 250.0)])
    out = io.StringIO()
    progress = PlainProgress(out, every_s=3600)
    progress.watch(live)
    progress.begin(3, "run")
    progress.advance(_record())
    assert out.getvalue().count("\n") == 1  # not one line per request
    progress.advance(_record(ok=False))
    before = time.monotonic_ns()
    progress.advance(_record())  # the last one always prints
    after = time.monotonic_ns()
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("[3/3]") and "1 failed" in line
    j = float(line.split(", ")[2].split()[0])
    # 250 W over the run so far, 3 requests done: the line's J/request (to 3 digits) is that at some
    # instant of the last advance.
    j_before, j_after = (250.0 * (t - start) / 1e9 / 3 for t in (before, after))
    assert float(f"{j_before:.3g}") <= j <= float(f"{j_after:.3g}") and "above idle" in line
    quiet_out = io.StringIO()
    quiet = QuietProgress(quiet_out)
    quiet.watch(live)
    quiet.begin(1, "run")
    quiet.advance(_record())
    assert quiet_out.getvalue() == ""
