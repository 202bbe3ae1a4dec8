"""The night's plan: config validation, drift-cancelling order, cooldown, exit bits (pure parts)."""

import textwrap

import pytest

from harness.errors import ConfigError
from harness.nightly import Cooldown, NightResult, RunOutcome, cool_down, load_night_config, run_order
from tests.conftest import ROOT, bench

GOOD = """
baseline: {variant: cpu-tiny, name: a}
candidates: [{variant: cpu-tiny, name: b, vllm: {max_num_seqs: 2}}]
limit: 2
"""


def write(tmp_path, text):
    path = tmp_path / "night.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_shipped_configs_load():
    for name in ("nightly.yaml", "nightly-gpu.yaml"):
        config = load_night_config(ROOT / "benchmarks" / name)
        assert config.candidates and config.repeats >= 2


@pytest.mark.parametrize(("extra", "message"), [
    ("order: zigzag\n", "order: must be one of abba, rotation"),
    ("repeats: 0\n", "repeats: must be"),
    ("colour: red\n", "unknown key 'colour'"),
    ("concurrency: [1, 0]\n", "concurrency"),
    ("metrics: [joules]\n", "metrics: known metrics"),
    ("thresholds: {penalty: -1}\n", "thresholds: penalty must be positive"),
    ("thresholds: {gate: yes}\n", "key 'gate' must be float"),
    ("cooldown: {max_s: soon}\n", "cooldown: key 'max_s' must be float"),
])
def test_bad_keys_are_named_with_the_file(tmp_path, extra, message):
    path = write(tmp_path, GOOD + extra)
    with pytest.raises(ConfigError, match=message) as info:
        load_night_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_variants_and_duplicate_names_fail_before_the_night(tmp_path):
    with pytest.raises(ConfigError, match="unknown variant 'nope'"):
        load_night_config(write(tmp_path, "baseline: nope\ncandidates: [cpu-tiny]\n"))
    with pytest.raises(ConfigError, match="names must differ"):
        load_night_config(write(tmp_path, "baseline: cpu-tiny\ncandidates: [cpu-tiny]\n"))


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    result = bench("nightly", "--config", write(tmp_path, "baseline: cpu-tiny\n"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "missing key 'candidates'" in result.stderr


def test_abba_order_gives_every_variant_the_same_mean_position():
    order = run_order(["A", "B", "C"], repeats=4, order="abba")
    assert order[:6] == ["A", "B", "C", "C", "B", "A"]
    mean_position = {v: sum(i for i, x in enumerate(order) if x == v) / 4 for v in "ABC"}
    assert len(set(mean_position.values())) == 1  # a linear drift over the night hits all alike


def test_lanes_start_rotated_and_rotation_is_seeded():
    assert run_order(["A", "B"], 2, "abba", lane=1) == ["B", "A", "A", "B"]
    first = run_order(list("ABCD"), 3, "rotation", lane=0, seed=7)
    assert first == run_order(list("ABCD"), 3, "rotation", lane=0, seed=7)
    assert sorted(first) == sorted(list("ABCD") * 3)


def test_cooldown_waits_for_idle_temperature_within_its_time_limit():
    temps = iter([70.0, 60.0, 52.0, 40.0])
    now = [0.0]

    def sleep(s):
        now[0] += s

    done = cool_down(lambda: next(temps), 50.0, Cooldown(within_c=3, max_s=100, poll_s=5), sleep, lambda: now[0])
    assert done["reason"] == "back near idle" and done["temperature_c"] == 52.0 and done["waited_s"] == 10
    hot = cool_down(lambda: 90.0, 50.0, Cooldown(within_c=3, max_s=12, poll_s=5), sleep, lambda: now[0])
    assert hot["reason"] == "time limit" and hot["waited_s"] >= 12
    assert cool_down(None, None, Cooldown())["reason"] == "no temperature sensor"


class _Alarm:
    def __init__(self, worse):
        self.change = type("C", (), {"worse": worse})()


@pytest.mark.parametrize(("gate", "run_ok", "alarm", "code"), [
    ("PASS", True, None, 0), ("FAIL", True, None, 1), ("PASS", False, None, 2), ("PASS", True, True, 4),
    ("PASS", True, False, 0), ("FAIL", False, True, 7), ("INCONCLUSIVE", True, None, 0),
])
def test_exit_code_bits(tmp_path, gate, run_ok, alarm, code):
    outcome = RunOutcome("", 0, "a", 1, "r", str(tmp_path), run_ok)
    result = NightResult("n", tmp_path, [outcome], [], [{"verdict": gate}], [], [],
                         [] if alarm is None else [_Alarm(alarm)])
    assert result.exit_code == code


def test_comparison_stays_within_a_gpu_and_reports_the_card_to_card_spread(tmp_path):
    from dataclasses import replace

    from harness.history import failed_row
    from harness.nightly import _comparison

    config = load_night_config(write(tmp_path, GOOD + "concurrency: [1]\n"))
    joules = {("0", "a"): [200.0, 202.0], ("0", "b"): [150.0], ("1", "a"): [230.0], ("1", "b"): [172.5]}
    rows = [replace(failed_row(f"{lane}{label}{k}", tmp_path / f"{lane}{label}{k}", label, "n", lane, ""),
                    status="complete", concurrency=1, j_per_request=j)
            for (lane, label), values in joules.items() for k, j in enumerate(values)]
    table, spread = _comparison(config, rows)
    vs = {(c["lane"], c["variant"]): c["vs_baseline"] for c in table}
    assert vs[("0", "b")] == pytest.approx(150 / 201 - 1) and vs[("1", "b")] == pytest.approx(-0.25)
    by_variant = {s["variant"]: s for s in spread}
    assert by_variant["a"]["spread_rel"] == pytest.approx((230 - 201) / ((230 + 201) / 2))
    assert by_variant["b"]["lanes"] == 2


def test_temperature_probe_reads_the_lanes_gpu_through_a_stand_in_nvml(monkeypatch):
    from types import SimpleNamespace

    from harness.nightly import gpu_temperature_probe

    class NVMLError(Exception):
        pass

    temps = {0: [41.0], 1: [55.0, None]}

    def temperature(handle, sensor):
        value = temps[handle].pop(0)
        if value is None:
            raise NVMLError("GPU is lost")
        return value

    def by_index(i):
        if i > 1:
            raise NVMLError("Invalid Argument")
        return i

    def by_uuid(uuid):
        if uuid != "GPU-b":
            raise NVMLError("Not Found")
        return 1

    fake = SimpleNamespace(NVMLError=NVMLError, NVML_TEMPERATURE_GPU=0, nvmlInit=lambda: None,
                           nvmlDeviceGetHandleByIndex=by_index, nvmlDeviceGetHandleByUUID=by_uuid,
                           nvmlDeviceGetTemperature=temperature)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    lane = gpu_temperature_probe(None)  # no lane GPU: the first visible one, as the meter does
    assert lane() == 55.0 and lane() is None  # a lost GPU reads as None, and the cooldown stops waiting
    assert gpu_temperature_probe("0")() == 41.0
    assert gpu_temperature_probe("7") is None and gpu_temperature_probe("GPU-zzz") is None
    assert cool_down(lambda: None, 40.0, Cooldown())["reason"] == "temperature unreadable"
