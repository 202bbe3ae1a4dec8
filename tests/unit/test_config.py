"""Variants, run settings and sampling, validated where they enter: bad values are refused in one
line that names the file and key (YAML) or the option (CLI)."""

import math

import pytest

from harness.config import RunSettings, Sampling, load_suite_spec, load_variant, wait_s
from harness.energy.attribute import PhaseWeights
from harness.errors import ConfigError
from tests.conftest import cli


def test_model_card_variants():
    bf16, fp8 = load_variant("bf16"), load_variant("fp8")
    for v in (bf16, fp8):
        assert v.vllm["dtype"] == "bfloat16" and v.vllm["max_model_len"] == 4096
        assert v.vllm["limit_mm_per_prompt"] == {"image": 1} and v.vllm["max_num_seqs"] == 32
        assert v.vllm["enable_chunked_prefill"] and v.vllm["enable_prefix_caching"]
    assert fp8.vllm["kv_cache_dtype"] == "fp8" and "kv_cache_dtype" not in bf16.vllm
    assert fp8.env["VLLM_TEST_FORCE_FP8_MARLIN"] == "1"
    assert fp8.dummy_model.layout == "fp8" and bf16.dummy_model.layout == "bf16"


def test_model_path_from_environment(monkeypatch):
    monkeypatch.setenv("BENCH_MODEL_FP8", "/models/mine")
    assert load_variant("fp8").model == "/models/mine"


def test_pasted_vllm_config_keeps_vllm_keys(tmp_path):
    path = tmp_path / "team.yaml"
    path.write_text("vllm:\n  model: org/model\n  kv_cache_dtype: fp8\n  gpu_memory_utilization: 0.9\n")
    v = load_variant(str(path))
    assert v.model == "org/model" and v.vllm == {"kv_cache_dtype": "fp8", "gpu_memory_utilization": 0.9}


@pytest.mark.parametrize("text, message", [
    ("name: x\nvllm: [1, 2]\n", "key 'vllm' must be dict"),
    ("name: x\nspeed: fast\n", "unknown key 'speed'"),
    ("name: x\nvllm: {a: 1\n", "malformed YAML"),
    ("- just a list\n", "expected a mapping"),
    ("name: x\ndummy_model: {preset: huge}\n", "preset must be tiny|e4b"),
    ("name: v\nenv: {1: x}\n", "1 is not an environment variable name"),
    ("name: v\nenv: {'A=B': x}\n", "'A=B' is not an environment variable name"),
    ('name: v\nenv: {"A\\0B": x}\n', "is not an environment variable name"),
    ('name: v\nenv: {A: "x\\0y"}\n', "'A' holds a NUL character"),
    ("name: v\nenv: {A: [1]}\n", "'A' must be a string or number"),
    ("name: v\nvllm: &x {a: *x}\n", "refers to its own anchor"),
    ("name: v\nenv: &x [1, *x]\n", "refers to its own anchor"),
    ("name: v\nvllm: {a: &x [[*x]]}\n", "refers to its own anchor"),
    (b"name: \xff\xfe\n", "not UTF-8 text"),
    pytest.param(b"name: v\nvllm: {a: " + b"[" * 5000 + b"]" * 5000 + b"}\n", "nested too deeply", id="nested"),
    ("name: v\nserver: {startup_timeout_s: 0}\n", "startup_timeout_s must be a positive"),
    ("name: v\nserver: {startup_timeout_s: .nan}\n", "startup_timeout_s must be a positive"),
    ("name: v\nserver: {startup_timeout_s: -5}\n", "startup_timeout_s must be a positive"),
    ("name: v\nvllm: {tensor_parallel_size: true}\n", "tensor_parallel_size"),
])
def test_bad_variant_files_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=message) as info:
        load_variant(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_shared_anchors_are_fine_but_a_billion_laughs_is_refused_in_linear_time(tmp_path):
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 11)]
    path = tmp_path / "v.yaml"
    path.write_text("name: v\nvllm:\n  " + "\n  ".join(levels[:3]) + "\n")  # 1 + 10 + 100 lists
    vllm = load_variant(str(path)).vllm
    assert vllm["l2"][9][9] is vllm["l0"]
    path.write_text("name: v\nvllm:\n  " + "\n  ".join(levels) + "\n")  # 10**10 values once written out
    with pytest.raises(ConfigError, match="aliases expand to more than 1,000,000 values"):
        load_variant(str(path))


def test_unknown_variant_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown variant 'fp4'.*bf16"):
        load_variant("fp4")


@pytest.mark.parametrize("kwargs, message", [
    ({"concurrency": 0}, "--concurrency"),
    ({"run_id": "../escape"}, "--run-id"),
    ({"energy": "trace"}, "--power-trace"),
    ({"request_timeout_s": 0.0}, "--timeout must be a positive number of seconds, not 0.0"),
    ({"request_timeout_s": -1.0}, "--timeout"), ({"request_timeout_s": math.nan}, "--timeout"),
    ({"max_retries": -1}, "--max-retries must be an integer ≥ 0, not -1"),
    ({"idle_s": math.nan}, "--idle-s"), ({"idle_s": math.inf}, "--idle-s"),
    ({"sample_rate_hz": math.nan}, "--sample-rate"), ({"max_failure_share": math.nan}, "--max-failure-share"),
    ({"sampling": {"temperature": math.nan}}, "--temperature must be a finite number ≥ 0, not nan"),
    ({"sampling": {"temperature": -0.5}}, "--temperature"), ({"sampling": {"temperature": math.inf}}, "--temperature"),
    ({"sampling": {"top_p": 0.0}}, "--top-p"), ({"sampling": {"top_p": 1.5}}, "--top-p"),
    ({"sampling": {"top_p": math.nan}}, "--top-p"),
    ({"sampling": {"top_k": -2}}, "--top-k"), ({"sampling": {"top_k": 1.5}}, "--top-k"),
    ({"sampling": {"max_tokens": 0}}, "--max-tokens must be an integer ≥ 1, not 0"),
    ({"sampling": {"max_tokens": -3}}, "--max-tokens"),
])
def test_run_settings_and_sampling_refuse_senseless_values(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        if "sampling" in kwargs:
            Sampling(**kwargs["sampling"])
        else:
            RunSettings(**{"results_dir": tmp_path, "run_id": "x", **kwargs})


def test_sampling_limits_that_are_allowed():
    Sampling(temperature=0.0, top_p=1.0, top_k=-1, max_tokens=1)
    Sampling(top_k=0)


@pytest.mark.parametrize("prefill", [math.nan, math.inf, 0.0, -1.0])
def test_phase_weights_are_positive_and_finite(prefill):
    with pytest.raises(ValueError, match="positive and finite"):
        PhaseWeights(prefill=prefill)


@pytest.mark.parametrize("args, message", [
    (("--temperature", "nan"), "--temperature must be a finite number"),
    (("--prefill-weight", "nan"), "--prefill-weight: phase weights must be positive and finite"),
])
def test_the_cli_says_it_in_one_line(tmp_path, args, message):
    result = cli("run", "--results-dir", tmp_path, "--idle-s", "0", *args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_default_suite_spec():
    spec = load_suite_spec("default")
    assert spec.max_tokens == 32 and spec.columns.image == "image"


def test_a_fixed_wait_is_its_default_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("BENCH_X_S", raising=False)
    assert wait_s("BENCH_X_S", 3.0) == 3.0
    monkeypatch.setenv("BENCH_X_S", "0.25")
    assert wait_s("BENCH_X_S", 3.0) == 0.25
    for bad in ("-1", "nan", "soon"):
        monkeypatch.setenv("BENCH_X_S", bad)
        with pytest.raises(ConfigError, match=r"\$BENCH_X_S must be a number of seconds"):
            wait_s("BENCH_X_S", 3.0)
