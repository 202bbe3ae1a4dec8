"""The NVML meter's own logic against a stand-in NVML binding (the hardware seam): device
selection, refusals, power-source choice, counter cadence, the final reading at stop."""

import time
from types import SimpleNamespace

import pandas as pd
import pytest

from harness.energy.analysis import analyse
from harness.energy.meters import NvmlMeter, visible_gpu_indices
from harness.errors import MeterError


class FakeNvml:
    """Enough of pynvml for the meter: a GPU drawing 100 W, then 300 W after `step_at`."""

    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    class NVMLError(Exception):
        pass

    def __init__(self, gpus=("GPU-aaa", "GPU-bbb"), mig=False, counter=True, instant=True):
        self.uuids, self.mig, self.counter, self.instant = list(gpus), mig, counter, instant
        self.t0 = time.monotonic()
        self.step_at = self.t0 + 0.3
        self.counter_reads = 0

    SENSOR_PERIOD_S = 0.02  # the stand-in sensor's own update period, with a 0.5 W ripple to see it by

    def watts(self, t):
        ripple = 0.5 * (int((t - self.t0) / self.SENSOR_PERIOD_S) % 2)
        return (100.0 if t < self.step_at else 300.0) + ripple

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
        self.counter_reads += 1
        t = time.monotonic()
        before = min(t, self.step_at) - self.t0
        after = max(0.0, t - self.step_at)
        return int(1000 * (100 * before + 300 * after))  # exact integral, mJ

    def nvmlDeviceGetUUID(self, h):
        return self.uuids[h]

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU"

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000

    def nvmlDeviceGetFieldValues(self, h, fields):
        ret = 0 if self.instant else 3
        return [SimpleNamespace(nvmlReturn=ret, value=SimpleNamespace(uiVal=int(self.watts(time.monotonic()) * 1000)))]

    def nvmlDeviceGetPowerUsage(self, h):
        return int(self.watts(time.monotonic()) * 1000)

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


def test_samples_power_reads_the_counter_sparsely_and_at_stop():
    nv = FakeNvml(gpus=("GPU-aaa",))
    meter = NvmlMeter(["0"], rate_hz=100, nvml=nv, counter_period_s=0.25)
    assert meter.info.power_source == "NVML_FI_DEV_POWER_INSTANT" and meter.info.gpus[0].uuid == "GPU-aaa"
    meter.start()
    t_start = time.monotonic_ns()
    time.sleep(0.8)
    t_end = time.monotonic_ns()
    samples = pd.DataFrame([s.__dict__ for s in meter.stop()])
    assert 50 <= len(samples) <= 85
    counter_rows = samples["energy_mj"].notna()
    assert 3 <= counter_rows.sum() <= 6 and counter_rows.iloc[-1]  # ~4 Hz, and the final reading
    assert samples["temperature_c"].notna().sum() >= 1
    assert meter.info.extra["sampler_achieved_rate_hz"] > 60
    requests = pd.DataFrame({"start_ns": [t_start + 50_000_000], "end_ns": [t_end - 50_000_000],
                             "first_token_ns": [t_start + 100_000_000], "status": ["ok"], "completion_tokens": [10]})
    _, summary = analyse(samples, requests, idle=None)
    assert abs(summary.counter_integral_rel_diff) < 0.05  # one 100→300 W step inside the window
    assert summary.attributed_j + summary.unattributed_j == pytest.approx(summary.counter_j)


def test_falls_back_to_power_usage_when_the_instant_field_is_missing():
    meter = NvmlMeter(["0"], nvml=FakeNvml(instant=False), probe_s=0.2)
    assert meter.info.power_source == "nvmlDeviceGetPowerUsage"


def test_mig_and_missing_counter_are_refused():
    with pytest.raises(MeterError, match="MIG mode"):
        NvmlMeter(["0"], nvml=FakeNvml(mig=True), probe_s=0.2)
    with pytest.raises(MeterError, match="no energy counter.*power-only"):
        NvmlMeter(["0"], nvml=FakeNvml(counter=False), probe_s=0.2)
    meter = NvmlMeter(["0"], nvml=FakeNvml(counter=False), power_only=True, probe_s=0.2)
    assert meter.info.gpus[0].has_energy_counter is False


def test_gpu_selection_follows_cuda_visible_devices_and_tensor_parallelism():
    assert visible_gpu_indices(2, {}) == ["0", "1"]
    assert visible_gpu_indices(1, {"CUDA_VISIBLE_DEVICES": "GPU-bbb,GPU-aaa"}) == ["GPU-bbb"]
    with pytest.raises(MeterError, match="tensor_parallel_size is 4"):
        visible_gpu_indices(4, {"CUDA_VISIBLE_DEVICES": "0,1"})
    meter = NvmlMeter(["GPU-bbb", "GPU-aaa"], nvml=FakeNvml(), probe_s=0.2)
    assert [g.uuid for g in meter.info.gpus] == ["GPU-bbb", "GPU-aaa"]
    with pytest.raises(MeterError, match="not found"):
        NvmlMeter(["GPU-zzz"], nvml=FakeNvml(), probe_s=0.2)
    assert meter.info.sensor_period_s == pytest.approx(FakeNvml.SENSOR_PERIOD_S, rel=0.5)
