"""Bad values are refused where config enters (variant YAML, run settings, sampling), in one line."""

import math

import pytest

from harness.config import RunSettings, Sampling, load_variant
from harness.energy.attribute import PhaseWeights
from harness.errors import ConfigError
from tests.conftest import bench


@pytest.mark.parametrize("env, message", [
    ("{1: x}", "1 is not an environment variable name"),
    ("{'A=B': x}", "'A=B' is not an environment variable name"),
    ('{"A\\0B": x}', "is not an environment variable name"),
    ('{A: "x\\0y"}', "'A' holds a NUL character"),
    ("{A: [1]}", "'A' must be a string or number"),
])
def test_variant_env_must_be_an_environment(tmp_path, env, message):
    path = tmp_path / "v.yaml"
    path.write_text(f"name: v\nenv: {env}\n")
    with pytest.raises(ConfigError, match=message):
        load_variant(str(path))


@pytest.mark.parametrize("text", [
    "name: v\nvllm: &x {a: *x}\n",
    "name: v\nenv: &x [1, *x]\n",
    "name: v\nvllm: {a: &x [[*x]]}\n",
])
def test_a_circular_yaml_anchor_is_refused(tmp_path, text):
    path = tmp_path / "v.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="refers to its own anchor"):
        load_variant(str(path))


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


@pytest.mark.parametrize("data, message", [
    (b"name: \xff\xfe\n", "not UTF-8 text"),
    (b"name: v\nvllm: {a: " + b"[" * 5000 + b"]" * 5000 + b"}\n", "nested too deeply"),
])
def test_unreadable_yaml_is_one_line(tmp_path, data, message):
    path = tmp_path / "v.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=message):
        load_variant(str(path))


@pytest.mark.parametrize("server, message", [
    ("{startup_timeout_s: 0}", "startup_timeout_s must be a positive"),
    ("{startup_timeout_s: .nan}", "startup_timeout_s must be a positive"),
    ("{startup_timeout_s: -5}", "startup_timeout_s must be a positive"),
])
def test_variant_server_block_numbers(tmp_path, server, message):
    path = tmp_path / "v.yaml"
    path.write_text(f"name: v\nserver: {server}\n")
    with pytest.raises(ConfigError, match=message):
        load_variant(str(path))


def test_tensor_parallel_size_true_is_no_number(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("name: v\nvllm: {tensor_parallel_size: true}\n")
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        load_variant(str(path))


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": math.nan}, "--temperature must be a finite number ≥ 0, not nan"),
    ({"temperature": -0.5}, "--temperature"), ({"temperature": math.inf}, "--temperature"),
    ({"top_p": 0.0}, "--top-p"), ({"top_p": 1.5}, "--top-p"), ({"top_p": math.nan}, "--top-p"),
    ({"top_k": -2}, "--top-k"), ({"top_k": 1.5}, "--top-k"),
    ({"max_tokens": 0}, "--max-tokens must be an integer ≥ 1, not 0"), ({"max_tokens": -3}, "--max-tokens"),
])
def test_sampling_is_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Sampling(**kwargs)


def test_sampling_limits_that_are_allowed():
    Sampling(temperature=0.0, top_p=1.0, top_k=-1, max_tokens=1)
    Sampling(top_k=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"request_timeout_s": 0.0}, "--timeout must be a positive number of seconds, not 0.0"),
    ({"request_timeout_s": -1.0}, "--timeout"), ({"request_timeout_s": math.nan}, "--timeout"),
    ({"max_retries": -1}, "--max-retries must be an integer ≥ 0, not -1"),
    ({"idle_s": math.nan}, "--idle-s"), ({"idle_s": math.inf}, "--idle-s"),
    ({"sample_rate_hz": math.nan}, "--sample-rate"), ({"max_failure_share": math.nan}, "--max-failure-share"),
])
def test_run_settings_refuse_nan_and_senseless_values(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RunSettings(results_dir=tmp_path, run_id="x", **kwargs)


@pytest.mark.parametrize("prefill", [math.nan, math.inf, 0.0, -1.0])
def test_phase_weights_are_positive_and_finite(prefill):
    with pytest.raises(ValueError, match="positive and finite"):
        PhaseWeights(prefill=prefill)


@pytest.mark.parametrize("args, message", [
    (("--temperature", "nan"), "--temperature must be a finite number"),
    (("--prefill-weight", "nan"), "--prefill-weight: phase weights must be positive and finite"),
])
def test_the_cli_says_it_in_one_line(tmp_path, args, message):
    result = bench("run", "--results-dir", tmp_path, "--idle-s", "0", *args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())
