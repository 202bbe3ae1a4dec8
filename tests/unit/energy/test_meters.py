"""The NVML meter's own logic against a stand-in NVML binding (the hardware seam): device
selection, refusals, power-source choice, counter cadence, the final reading at stop."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.energy import meters
from harness.energy.analysis import analyse
from harness.energy.meters import NvmlMeter, visible_gpu_indices
from harness.errors import MeterError
from tests.timing import SCHEDULING_SLACK_S


class FakeNvml:
    """Enough of pynvml for the meter: a GPU drawing 100 W until `step()`, then 300 W.

    `reading_time_ns`: the instant a reading is of. By default when it is taken; a test that gives the
    meter a `StampClock` passes the meter's own timestamp, so that no scheduler delay falls between a
    sample's timestamp and its values."""

    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    SENSOR_PERIOD_NS = 20_000_000  # the stand-in sensor's own update period, with a 0.5 W ripple to see it by

    class NVMLError(Exception):
        pass

    def __init__(self, gpus=("GPU-aaa", "GPU-bbb"), mig=False, counter=True, instant=True,
                 reading_time_ns=time.monotonic_ns):
        self.uuids, self.mig, self.counter, self.instant = list(gpus), mig, counter, instant
        self.reading_time_ns = reading_time_ns
        self.t0_ns = reading_time_ns()
        self.step_ns: int | None = None
        # step() takes its time and sets it in one go: a reading is then either wholly before it or after.
        self._lock = threading.Lock()
        self.stall_s = 0.0

    def step(self) -> None:
        """100 → 300 W from now on."""
        with self._lock:
            self.step_ns = time.monotonic_ns()

    def _watts(self, t_ns: int) -> float:
        ripple_w = 0.5 * ((t_ns - self.t0_ns) // self.SENSOR_PERIOD_NS % 2)
        return (100.0 if self.step_ns is None or t_ns < self.step_ns else 300.0) + ripple_w

    def _milliwatts(self) -> int:
        if self.stall_s:  # one slow reading, as when NVML or the sampler thread is held up
            time.sleep(self.stall_s)
            self.stall_s = 0.0
        with self._lock:
            return int(self._watts(self.reading_time_ns()) * 1000)

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        if i >= len(self.uuids):
            raise self.NVMLError("Invalid Argument")
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.uuids:
            raise self.NVMLError("Not Found")
        return self.uuids.index(uuid)

    def nvmlDeviceGetMigMode(self, h):
        return (1 if self.mig else 0, 0)

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.counter:
            raise self.NVMLError("Not Supported")
        with self._lock:
            t_ns = self.reading_time_ns()
            step_ns = t_ns if self.step_ns is None else self.step_ns
            before_ns, after_ns = min(t_ns, step_ns) - self.t0_ns, max(0, t_ns - step_ns)
        return (100 * before_ns + 300 * after_ns) // 1_000_000  # exact integral (W·ns → mJ), without the ripple

    def nvmlDeviceGetUUID(self, h):
        return self.uuids[h]

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU"

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000

    def nvmlDeviceGetFieldValues(self, h, fields):
        ret = 0 if self.instant else 3
        return [SimpleNamespace(nvmlReturn=ret, value=SimpleNamespace(uiVal=self._milliwatts()))]

    def nvmlDeviceGetPowerUsage(self, h):
        return self._milliwatts()

    def nvmlSystemGetDriverVersion(self):
        return "999.1"

    def nvmlSystemGetNVMLVersion(self):
        return "13.999"

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 40

    def nvmlDeviceGetClockInfo(self, h, clock):
        return 1980

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0


class StampClock:
    """`time` for harness.energy.meters in a test: the real clock, remembering the meter's last timestamp
    so that the stand-in GPU can answer as of it."""

    def __init__(self):
        self.last_ns = time.monotonic_ns()

    def monotonic_ns(self) -> int:
        self.last_ns = time.monotonic_ns()
        return self.last_ns

    def __getattr__(self, name):  # sleep, monotonic, thread_time: the real ones
        return getattr(time, name)


class SteppingClock(StampClock):
    """A clock that moves 1 ms at every reading and not otherwise: a loop on it sees the stand-in sensor
    change at exact times, however the machine schedules it."""

    STEP_NS = 1_000_000

    def __init__(self):
        self.last_ns = 0

    def monotonic_ns(self) -> int:
        self.last_ns += self.STEP_NS
        return self.last_ns

    def monotonic(self) -> float:
        return self.monotonic_ns() / 1e9


def drain_until(meter, enough) -> list:
    """Drain `meter` until `enough(samples so far)`; a sampler at work adds a reading every period."""
    deadline = time.monotonic() + 1 / meter.rate_hz + SCHEDULING_SLACK_S
    samples = []
    while not enough(samples):
        assert time.monotonic() < deadline, f"the meter's samples so far do not suffice: {samples}"
        time.sleep(1 / meter.rate_hz)
        samples += meter.drain()
    return samples


def test_samples_power_reads_the_counter_sparsely_and_at_stop(monkeypatch):
    clock = StampClock()
    monkeypatch.setattr(meters, "time", clock)
    nv = FakeNvml(gpus=("GPU-aaa",), reading_time_ns=lambda: clock.last_ns)
    # Counter and slow fields every 25 readings, not in the same one; no probe (it has its own test).
    meter = NvmlMeter(["0"], rate_hz=100, nvml=nv, counter_period_s=0.25, slow_period_s=0.25, probe_s=0)
    assert meter.info.power_source == "NVML_FI_DEV_POWER_INSTANT" and meter.info.gpus[0].uuid == "GPU-aaa"
    meter.start()
    first = drain_until(meter, len)  # the window opens at the first reading, before the step
    time.sleep(0.3)
    nv.step()
    time.sleep(0.5)
    t_end = time.monotonic_ns()
    samples = pd.DataFrame([s.__dict__ for s in first + meter.stop()])
    last = len(samples) - 1  # one GPU: row n is the sampler's n-th reading; the last is the one at stop
    assert samples.index[samples["energy_mj"].notna()].tolist() == [*range(0, last, 25), last]
    assert samples.index[samples["temperature_c"].notna()].tolist() == [n for n in range(last + 1) if n % 25 == 12]
    t_start = first[0].t_ns
    requests = pd.DataFrame({"start_ns": [t_start], "end_ns": [t_end], "first_token_ns": [t_start + 100_000_000],
                             "status": ["ok"], "completion_tokens": [10]})
    _, summary = analyse(samples, requests, idle=None)
    # Every reading is the stand-in's value at its own timestamp and the counter is exact: the power
    # integral differs from it only by the 0.5 W ripple the counter leaves out and where it interpolates
    # across the 100→300 W step (by at most 100 W over the gap between the readings either side of it).
    stepped = samples["power_w"] >= 300
    step_gap_s = (samples["t_ns"][stepped].min() - samples["t_ns"][~stepped].max()) / 1e9
    span_s = (samples["t_ns"].iloc[-1] - t_start) / 1e9
    assert abs(summary.integral_j - summary.counter_j) <= 100 * step_gap_s + 0.5 * span_s + 0.001  # 1 mJ counter
    assert summary.attributed_j + summary.unattributed_j == pytest.approx(summary.counter_j)


def test_a_sampler_that_fell_behind_does_not_burst_to_catch_up():
    nv = FakeNvml(gpus=("GPU-aaa",))
    meter = NvmlMeter(["0"], rate_hz=100, nvml=nv, probe_s=0)
    period_ns = 10_000_000
    nv.stall_s = 0.1  # the first reading takes ten periods
    t_before_start = time.monotonic_ns()
    meter.start()
    time.sleep(0.3)
    samples = meter.stop()
    t_after_stop = time.monotonic_ns()
    t = np.array([s.t_ns for s in samples])
    # A reading is due a period after the previous one was due, or after it was taken where that was
    # later: the schedule only slips, so n + 1 readings (the last at stop) need at least n periods, and
    # any three consecutive ones at least one, however late the sampler ran.
    assert len(samples) <= (t_after_stop - t_before_start) / period_ns + 1
    assert (t[2:] - t[:-2]).min() >= period_ns
    assert 0 < meter.info.extra["sampler_achieved_rate_hz"] <= 100  # so it is never above the rate asked for


def test_the_sensor_period_is_measured_by_reading_as_fast_as_nvml_answers(monkeypatch):
    clock = SteppingClock()
    monkeypatch.setattr(meters, "time", clock)
    meter = NvmlMeter(["0"], nvml=FakeNvml(reading_time_ns=lambda: clock.last_ns), probe_s=0.2)
    assert meter.info.sensor_period_s == FakeNvml.SENSOR_PERIOD_NS / 1e9


def test_falls_back_to_power_usage_when_the_instant_field_is_missing():
    meter = NvmlMeter(["0"], nvml=FakeNvml(instant=False), probe_s=0)
    assert meter.info.power_source == "nvmlDeviceGetPowerUsage"


def test_mig_and_missing_counter_are_refused():
    with pytest.raises(MeterError, match="MIG mode"):
        NvmlMeter(["0"], nvml=FakeNvml(mig=True), probe_s=0)
    with pytest.raises(MeterError, match="no energy counter.*power-only"):
        NvmlMeter(["0"], nvml=FakeNvml(counter=False), probe_s=0)
    meter = NvmlMeter(["0"], nvml=FakeNvml(counter=False), power_only=True, probe_s=0)
    assert meter.info.gpus[0].has_energy_counter is False


def test_gpu_selection_follows_cuda_visible_devices_and_tensor_parallelism():
    assert visible_gpu_indices(2, {}) == ["0", "1"]
    assert visible_gpu_indices(1, {"CUDA_VISIBLE_DEVICES": "GPU-bbb,GPU-aaa"}) == ["GPU-bbb"]
    with pytest.raises(MeterError, match="tensor_parallel_size is 4"):
        visible_gpu_indices(4, {"CUDA_VISIBLE_DEVICES": "0,1"})
    meter = NvmlMeter(["GPU-bbb", "GPU-aaa"], nvml=FakeNvml(), probe_s=0)
    assert [g.uuid for g in meter.info.gpus] == ["GPU-bbb", "GPU-aaa"]
    with pytest.raises(MeterError, match="not found"):
        NvmlMeter(["GPU-zzz"], nvml=FakeNvml(), probe_s=0)
