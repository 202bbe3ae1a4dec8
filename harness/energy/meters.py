"""Power meters: where power samples come from. The only module that talks to NVML.

Protocol: `start()` begins sampling in the background, `drain()` hands over the samples taken
since the last drain (the runner appends them to the power journal as the run goes, so a crash
loses at most a second of trace), `stop()` ends sampling. `info` says how it measures.

Implementations: `NvmlMeter` (real GPUs), `TraceMeter` (a recorded or external trace, aligned by
wall clock), `NoMeter` (no GPU: every energy field says why it is missing)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from harness.energy.integrate import distinct_update_period_s
from harness.errors import MeterError
from harness.records import GpuInfo, MeterInfo, PowerSample, RunClock


class NvmlUnavailable(MeterError):
    """No NVML on this machine (no NVIDIA driver, or no binding)."""

    def __init__(self, detail: str):
        super().__init__(f"NVML is not available ({detail}); use --energy none on a machine without a GPU")
        self.detail = detail


class PowerMeter(Protocol):
    info: MeterInfo

    def start(self) -> None: ...
    def drain(self) -> list[PowerSample]: ...
    def stop(self) -> list[PowerSample]: ...


class NoMeter:
    """No power source: the run completes, energy fields carry `reason`."""

    def __init__(self, reason: str):
        self.info = MeterInfo(kind="none", unavailable_reason=reason)

    def start(self) -> None:
        pass

    def drain(self) -> list[PowerSample]:
        return []

    def stop(self) -> list[PowerSample]:
        return []


def read_trace_file(path: Path, clock: RunClock | None = None) -> pd.DataFrame:
    """Load a power trace (parquet or CSV) into the power-sample table.

    Accepted columns: `power_w` (required); a time as `t_ns` (this harness's monotonic clock,
    as in power.parquet) or `time_s` / `timestamp` (Unix seconds, e.g. a DCGM or wall-meter
    export; converted with the run's clock); optional `gpu`, `energy_mj`, `temperature_c`,
    `sm_clock_mhz`, `throttle_reasons`."""
    if not path.is_file():
        raise MeterError(f"power trace {path} not found")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for a malformed file
        raise MeterError(f"power trace {path} cannot be read: {exc}") from None
    if "power_w" not in frame:
        raise MeterError(f"power trace {path} has no 'power_w' column")
    if "t_ns" not in frame:
        wall = next((c for c in ("time_s", "timestamp") if c in frame), None)
        if wall is None:
            raise MeterError(f"power trace {path} needs a 't_ns' or 'time_s' column")
        if clock is None:
            raise MeterError(f"power trace {path} is in wall-clock time; the run's clock is needed to align it")
        frame["t_ns"] = [clock.to_mono_ns(float(s)) for s in frame[wall]]
    if "gpu" not in frame:
        frame["gpu"] = 0
    for col in ("energy_mj", "temperature_c", "sm_clock_mhz", "throttle_reasons"):
        if col not in frame:
            frame[col] = np.nan
    frame = frame[["t_ns", "gpu", "power_w", "energy_mj", "temperature_c", "sm_clock_mhz", "throttle_reasons"]]
    # Non-numeric readings become NaN: analysis leaves them out and flags them (never a traceback).
    frame = frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in ("power_w", "energy_mj")})
    frame = frame.astype({"t_ns": "int64", "gpu": "int64", "power_w": "float64"})
    return frame.sort_values(["t_ns", "gpu"], ignore_index=True)


class TraceMeter:
    """Replays a power trace recorded elsewhere (a wall-power meter, DCGM, an earlier run).
    Samples are only known once the file is read, at `stop()`."""

    def __init__(self, path: Path, clock: RunClock):
        self.path, self.clock = path, clock
        read_trace_file(path, clock)  # fail before the run, not after it
        self.info = MeterInfo(kind="trace", power_source=f"trace file {path.name}")

    def start(self) -> None:
        pass

    def drain(self) -> list[PowerSample]:
        return []

    def stop(self) -> list[PowerSample]:
        frame = read_trace_file(self.path, self.clock)
        def value(x):
            return None if pd.isna(x) else float(x)

        # Every column the trace carries is kept (temperature, clock and throttle feed the validity flags).
        return [PowerSample(int(r.t_ns), int(r.gpu), float(r.power_w), value(r.energy_mj), value(r.temperature_c),
                            value(r.sm_clock_mhz), None if pd.isna(r.throttle_reasons) else int(r.throttle_reasons))
                for r in frame.itertuples()]


def visible_gpu_indices(tensor_parallel_size: int, environ: dict | None = None) -> list[str]:
    """The GPUs a server started with this environment uses: the first `tensor_parallel_size`
    entries of CUDA_VISIBLE_DEVICES (indices or UUIDs), or 0..tp-1 when it is unset."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() == "":
        return [str(i) for i in range(tensor_parallel_size)]
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    if len(entries) < tensor_parallel_size:
        raise MeterError(f"CUDA_VISIBLE_DEVICES lists {len(entries)} GPU(s) but tensor_parallel_size is "
                         f"{tensor_parallel_size}")
    return entries[:tensor_parallel_size]


class NvmlMeter:
    """Samples GPU power through NVML in a background thread.

    Power: NVML_FI_DEV_POWER_INSTANT through field values where the GPU supports it (an
    instantaneous reading), else nvmlDeviceGetPowerUsage (on recent GPUs a ~1 s average that
    reads low over short bursts); which one is recorded. The hardware energy counter is read
    once a second and at stop. Temperature, SM clock and clock-event reasons once a second."""

    def __init__(self, gpus: list[str], rate_hz: float = 100.0, power_only: bool = False,
                 slow_period_s: float = 1.0, counter_period_s: float = 1.0, nvml=None, probe_s: float = 1.0):
        """`nvml`: the NVML binding (the `pynvml` module by default; tests pass a stand-in).
        `probe_s`: how long to read as fast as possible to measure the sensor's update period."""
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as exc:
                raise NvmlUnavailable(f"pynvml is not importable: {exc}") from None
        self.nv = pynvml = nvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(str(exc)) from None
        self.rate_hz = rate_hz
        self.slow_every = max(1, round(slow_period_s * rate_hz))
        # The energy counter costs ~4 ms of CPU per read on an H200 VM (instant power ~0.02 ms):
        # read it once a second and at start/stop; analysis corrects the window edges with the
        # power integral (integrate.counter_delta_j).
        self.counter_every = max(1, round(counter_period_s * rate_hz))
        self.handles, infos = [], []
        for n, ident in enumerate(gpus):
            handle = self._handle(ident)
            self._refuse_mig(handle, ident)
            has_counter = self._has_counter(handle)
            if not has_counter and not power_only:
                raise MeterError(f"GPU {ident} has no energy counter; pass --energy power-only to integrate "
                                 f"power alone")
            self.handles.append(handle)
            infos.append(GpuInfo(index=n, uuid=self._str(pynvml.nvmlDeviceGetUUID(handle)),
                                 name=self._str(pynvml.nvmlDeviceGetName(handle)),
                                 power_limit_w=self._call(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle, scale=1e-3),
                                 has_energy_counter=has_counter))
        # Renamed in newer NVML bindings ("throttle" → "clocks event"); same bits.
        self._clock_reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        self.instant_field = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", None)
        self.use_instant = self.instant_field is not None and all(self._instant(h) is not None for h in self.handles)
        self.info = MeterInfo(
            kind="nvml", gpus=tuple(infos),
            power_source="NVML_FI_DEV_POWER_INSTANT" if self.use_instant else "nvmlDeviceGetPowerUsage",
            driver_version=self._str(pynvml.nvmlSystemGetDriverVersion()),
            nvml_version=self._str(pynvml.nvmlSystemGetNVMLVersion()),
            requested_rate_hz=rate_hz, sensor_period_s=self._probe_sensor_period(probe_s),
        )
        self._samples: list[PowerSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_s = 0.0
        self._wall_s = 0.0
        self._count = 0

    @staticmethod
    def _str(value) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def _call(self, fn, *args, scale: float = 1.0):
        try:
            return fn(*args) * scale
        except self.nv.NVMLError:
            return None

    def _handle(self, ident: str):
        try:
            if ident.isdigit():
                return self.nv.nvmlDeviceGetHandleByIndex(int(ident))
            return self.nv.nvmlDeviceGetHandleByUUID(ident)
        except self.nv.NVMLError as exc:
            raise MeterError(f"GPU '{ident}' not found through NVML ({exc})") from None

    def _refuse_mig(self, handle, ident: str) -> None:
        try:
            current, _pending = self.nv.nvmlDeviceGetMigMode(handle)
        except self.nv.NVMLError:
            return  # GPUs without MIG support
        if current == 1:
            raise MeterError(f"GPU {ident} is in MIG mode: NVML reports power for the whole board, not the "
                             f"instance; energy per instance cannot be measured")

    def _has_counter(self, handle) -> bool:
        try:
            self.nv.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except self.nv.NVMLError:
            return False

    def _instant(self, handle) -> float | None:
        try:
            value = self.nv.nvmlDeviceGetFieldValues(handle, [self.instant_field])[0]
        except self.nv.NVMLError:
            return None
        if value.nvmlReturn != 0:
            return None
        return value.value.uiVal / 1000.0

    def _power_w(self, handle) -> float:
        if self.use_instant:
            reading = self._instant(handle)
            if reading is not None:
                return reading
        return self.nv.nvmlDeviceGetPowerUsage(handle) / 1000.0

    def _probe_sensor_period(self, seconds: float = 1.0) -> float | None:
        """Read as fast as NVML answers for `seconds`; the median time between changed values is
        the sensor's own update period (measured, not assumed)."""
        handle, t, p = self.handles[0], [], []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t.append(time.monotonic_ns())
            p.append(self._power_w(handle))
        return distinct_update_period_s(np.asarray(t), np.asarray(p))

    def _read(self, n: int, final: bool = False) -> list[PowerSample]:
        slow = n % self.slow_every == self.slow_every // 2  # not in the counter's iteration: spread the cost
        with_counter = final or n % self.counter_every == 0
        now = time.monotonic_ns()
        out = []
        for gpu, handle in enumerate(self.handles):
            energy = self._call(self.nv.nvmlDeviceGetTotalEnergyConsumption, handle) if with_counter else None
            extra = {}
            if slow:
                extra = dict(
                    temperature_c=self._call(self.nv.nvmlDeviceGetTemperature, handle, self.nv.NVML_TEMPERATURE_GPU),
                    sm_clock_mhz=self._call(self.nv.nvmlDeviceGetClockInfo, handle, self.nv.NVML_CLOCK_SM),
                    throttle_reasons=self._call(self._clock_reasons, handle),
                )
            out.append(PowerSample(now, gpu, self._power_w(handle), energy, **extra))
        return out

    def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        cpu0, wall0 = time.thread_time(), time.monotonic()
        next_t, n = time.monotonic(), 0
        while not self._stop.is_set():
            batch = self._read(n)
            with self._lock:
                self._samples.extend(batch)
            n += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # cheaper than Event.wait at 100 Hz; stop() waits ≤ one period
            else:
                next_t = time.monotonic()  # fell behind: do not burst to catch up
        final = self._read(n, final=True)  # the stop is a window edge: read power and counter now
        with self._lock:
            self._samples.extend(final)
        self._cpu_s, self._wall_s, self._count = time.thread_time() - cpu0, time.monotonic() - wall0, n

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def drain(self) -> list[PowerSample]:
        with self._lock:
            out, self._samples = self._samples, []
        return out

    def stop(self) -> list[PowerSample]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self.info = replace(self.info, extra={
                "sampler_cpu_share_of_one_core": self._cpu_s / self._wall_s if self._wall_s else None,
                "sampler_achieved_rate_hz": self._count / self._wall_s if self._wall_s else None,
                "sampler_cpu_s": self._cpu_s, "sampler_wall_s": self._wall_s,
            })
        return self.drain()


def open_meter(mode: str, *, tensor_parallel_size: int, rate_hz: float, clock: RunClock,
               trace: Path | None, environ: dict | None = None) -> PowerMeter:
    """The meter a run asked for. `auto`: NVML when it answers, else none (with the reason)."""
    if mode == "none":
        return NoMeter("energy measurement was turned off (--energy none)")
    if mode == "trace":
        return TraceMeter(trace, clock)
    gpus = visible_gpu_indices(tensor_parallel_size, environ)
    try:
        return NvmlMeter(gpus, rate_hz=rate_hz, power_only=mode == "power-only")
    except NvmlUnavailable as exc:
        if mode == "auto":
            return NoMeter(f"no GPU power source on this machine (NVML: {exc.detail})")
        raise
