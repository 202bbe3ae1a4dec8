"""Image-to-text suites: a dataset (local parquet / save_to_disk folder, or a Hugging Face Hub
dataset) plus the column mapping and prompt of its YAML.

Where the data comes from, in order:
- a local copy named by `--suite NAME=PATH` or `BENCH_SUITE_DATA_<NAME>=PATH`: a `save_to_disk`
  folder, parquet file(s), or a Hugging Face Hub cache (a folder holding `datasets--org--name`, or
  one snapshot of it);
- a Hub suite by name: only the parquet shards of the suite's subset and split are downloaded
  (`huggingface_hub.snapshot_download`) into the harness's own cache,
  `$BENCH_DATASETS_CACHE` (default `~/.cache/energy-harness/datasets`); with `HF_HUB_OFFLINE=1`
  (or `HF_DATASETS_OFFLINE=1`) nothing is fetched and the cache must hold them.
Parquet is read with pyarrow (only the rows drawn by `--limit`), a `save_to_disk` folder is
memory-mapped: loading a suite writes nothing into `~/.cache/huggingface`.

Images: see `harness/images.py` (sent as their original bytes when servers decode them alike)."""

from __future__ import annotations

import ast
import bisect
import contextlib
import hashlib
import json
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from harness.config import SuiteSpec, local_copy_variable
from harness.errors import SuiteError
from harness.images import prepare_image
from harness.scoring.metrics import METRICS

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class SuiteItem:
    id: str
    task: str
    metric: str
    prompt: str  # the rendered prompt (pre + question + options + post)
    references: tuple[str, ...]
    image_bytes: bytes
    image_mime: str
    converted_from: str | None = None  # what was done to the image before sending, if anything
    system_prompt: str | None = None  # e.g. "<|think|>" when the suite turns Gemma 4 thinking on


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    items: tuple[SuiteItem, ...]
    content_hash: str  # sha256 over ids, prompts, references, metrics and image bytes

    def task_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(i.task for i in self.items).items()))


def datasets_cache_dir() -> Path:
    """The harness's own download cache for Hub suites (never ~/.cache/huggingface)."""
    return Path(os.environ.get("BENCH_DATASETS_CACHE", Path.home() / ".cache/energy-harness/datasets"))


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "BENCH_OFFLINE"))


def _inside(root: Path, relative: str) -> Path:
    """Suite data paths stay inside the suite's folder (no '../' escapes, no absolute paths)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SuiteError(f"{relative}: path escapes the suite folder {root}")
    return path


# --- tables: the rows of one split, read lazily --------------------------------------------------
class _Table(Protocol):
    """One split of a dataset: column names, row count, one column, and chosen rows as dicts."""

    column_names: list[str]
    num_rows: int

    def column(self, name: str) -> list: ...

    def rows(self, indices: list[int]) -> list[dict]: ...


@contextlib.contextmanager
def _reading(paths: list[Path]):
    """pyarrow's errors (a truncated shard, shards with different columns) as one-line SuiteErrors."""
    try:
        yield
    except (pa.ArrowException, OSError, KeyError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SuiteError(f"cannot read the parquet data under {paths[0].parent}: {first}") from None


class _ArrowTable:
    """Parquet files through pyarrow: a column is read on its own, and rows are read from the
    row groups that hold them only (a 200-item draw from VQAv2 does not read its 7 GB)."""

    def __init__(self, files: list[Path]):
        self.paths = files
        with _reading(files):
            self.files = [pq.ParquetFile(str(f)) for f in files]
        self.column_names = list(self.files[0].schema_arrow.names)
        # (file, row group, first global row) for every row group, in order
        self.groups, start = [], 0
        for f in self.files:
            for g in range(f.metadata.num_row_groups):
                self.groups.append((f, g, start))
                start += f.metadata.row_group(g).num_rows
        self.num_rows = start

    def column(self, name: str) -> list:
        with _reading(self.paths):
            return [v for f in self.files for v in f.read(columns=[name]).column(name).to_pylist()]

    def rows(self, indices: list[int]) -> list[dict]:
        with _reading(self.paths):
            return self._rows(indices)

    def _rows(self, indices: list[int]) -> list[dict]:
        starts = [g[2] for g in self.groups]
        wanted: dict[int, list[int]] = defaultdict(list)
        for i in indices:
            wanted[bisect.bisect_right(starts, i) - 1].append(i)
        found = {}
        for k, rows in wanted.items():
            f, g, first = self.groups[k]
            table = f.read_row_group(g).take([i - first for i in rows]).to_pylist()
            found.update(zip(rows, table, strict=True))
        return [found[i] for i in indices]


class _HfTable:
    """A `save_to_disk` folder, memory-mapped by `datasets`; Image columns keep their bytes."""

    def __init__(self, ds):
        from datasets import Image as ImageFeature  # `datasets` takes seconds to import: only for save_to_disk folders

        for name, feature in ds.features.items():
            if isinstance(feature, ImageFeature):
                ds = ds.cast_column(name, ImageFeature(decode=False))
        self.ds = ds
        self.column_names = list(ds.column_names)
        self.num_rows = len(ds)

    def column(self, name: str) -> list:
        return list(self.ds[name])

    def rows(self, indices: list[int]) -> list[dict]:
        return list(self.ds.select(indices)) if indices else []


def _read_disk(path: Path, spec: SuiteSpec) -> _Table:
    import datasets  # takes seconds to import: only for save_to_disk folders

    datasets.disable_progress_bars()
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise SuiteError(f"{spec.source}: split '{spec.split}' is not in {path} (it has: {', '.join(loaded)})")
        loaded = loaded[spec.split]
    return _HfTable(loaded)


def _card_patterns(card: Path, subset: str | None, split: str) -> list[str]:
    """The data files of (subset, split) as the dataset card's `configs:` block declares them."""
    try:
        text = card.read_text(encoding="utf-8")
        header = yaml.safe_load(text.split("---")[1]) if text.startswith("---") else None
    except (OSError, UnicodeDecodeError, IndexError, yaml.YAMLError):  # no usable card: the usual file names
        return []
    if not isinstance(header, dict):
        return []
    for config in header.get("configs") or []:
        if not isinstance(config, dict) or config.get("config_name", "default") != (subset or "default"):
            continue
        for entry in config.get("data_files") or []:
            if isinstance(entry, dict) and entry.get("split") == split:
                paths = entry.get("path")
                return [paths] if isinstance(paths, str) else [str(p) for p in paths or []]
    return []


def _default_patterns(subset: str | None, split: str) -> list[str]:
    # The layouts the Hub's parquet uploads use: <config>/<split>-*.parquet, data/<split>-*.parquet
    prefixes = [f"{subset}/" if subset else "", "data/", f"{subset or 'default'}/"]
    return [f"{p}{split}-*" for p in prefixes] + [f"{p}{split}/*.parquet" for p in prefixes]


def _split_files(root: Path, spec: SuiteSpec) -> list[Path]:
    """The parquet files of the suite's subset and split under a Hub snapshot (or any folder)."""
    patterns = _card_patterns(root / "README.md", spec.subset, spec.split) or _default_patterns(spec.subset, spec.split)
    files = sorted({f for pattern in patterns for f in root.glob(pattern) if f.suffix == ".parquet" and f.is_file()})
    if not files and not any(root.rglob("README.md")):  # a plain folder of parquet files is one split
        files = sorted(f for f in root.rglob("*.parquet") if f.is_file())
    if not files:
        raise SuiteError(f"{spec.source}: no parquet files of subset '{spec.subset or 'default'}' split "
                         f"'{spec.split}' under {root} (looked for {', '.join(patterns)})")
    return files


def _snapshot_in_cache(cache: Path, repo: str) -> Path | None:
    """The newest snapshot of a dataset in a Hugging Face Hub cache folder (refs/main first)."""
    folder = cache / f"datasets--{repo.replace('/', '--')}"
    if not folder.is_dir():
        hub = cache / "hub" / folder.name
        folder = hub if hub.is_dir() else folder
    if not folder.is_dir():
        return None
    ref = folder / "refs" / "main"
    if ref.is_file() and (folder / "snapshots" / ref.read_text().strip()).is_dir():
        return folder / "snapshots" / ref.read_text().strip()
    snapshots = sorted((folder / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def _hub_snapshot(spec: SuiteSpec) -> Path:
    """Download (or, offline, find) the suite's split in the harness's own Hub cache."""
    cache = datasets_cache_dir()
    from huggingface_hub import snapshot_download  # slow to import: only for Hub suites

    offline = _offline()
    try:
        root = Path(snapshot_download(spec.data_path, repo_type="dataset", cache_dir=str(cache),
                                      allow_patterns=["README.md"], local_files_only=offline))
        patterns = _card_patterns(root / "README.md", spec.subset, spec.split) or _default_patterns(spec.subset,
                                                                                                     spec.split)
        return Path(snapshot_download(spec.data_path, repo_type="dataset", cache_dir=str(cache),
                                      allow_patterns=patterns + ["README.md"], local_files_only=offline))
    except Exception as exc:  # huggingface_hub raises LocalEntryNotFoundError, HTTP and OS errors
        variable = local_copy_variable(spec.name)
        if offline:
            raise SuiteError(f"{spec.source}: '{spec.data_path}' is not in the dataset cache {cache} and the Hub is "
                             f"offline (HF_HUB_OFFLINE); download it once online, or point {variable} at a "
                             "local copy") from None
        reason = (str(exc).splitlines() or [type(exc).__name__])[-1].strip() or type(exc).__name__
        raise SuiteError(f"{spec.source}: cannot fetch '{spec.data_path}' from the Hub ({reason}); "
                         f"or point {variable} at a local copy") from None


def _local_copy(path: Path, spec: SuiteSpec) -> _Table:
    """A save_to_disk folder, parquet file(s), or a Hub cache (root or one snapshot)."""
    if not path.exists():
        raise SuiteError(f"{spec.name}: local copy {path} does not exist")
    if path.is_file():
        if path.suffix != ".parquet":
            raise SuiteError(f"{spec.name}: local copy {path} is not a parquet file or a folder")
        return _ArrowTable([path])
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return _read_disk(path, spec)
    snapshot = _snapshot_in_cache(path, spec.data_path) if spec.data_format == "hub" else None
    return _ArrowTable(_split_files(snapshot or path, spec))


def open_table(spec: SuiteSpec) -> _Table:
    try:
        if spec.local_copy:
            return _local_copy(Path(spec.local_copy).expanduser(), spec)
        if spec.data_format == "parquet":
            path = _inside(spec.root, spec.data_path)
            files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            if not files or not all(f.is_file() for f in files):
                raise SuiteError(f"{spec.source}: data file {path} not found")
            return _ArrowTable(files)
        if spec.data_format == "disk":
            return _read_disk(_inside(spec.root, spec.data_path), spec)
        return _ArrowTable(_split_files(_hub_snapshot(spec), spec))
    except SuiteError:
        raise
    except Exception as exc:  # pyarrow / datasets raise ArrowInvalid, FileNotFoundError, ValueError...
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SuiteError(f"{spec.source}: cannot read the data of suite '{spec.name}': {first}") from None


# --- the --limit draw ------------------------------------------------------------------------------
def _label(value) -> str:
    if isinstance(value, (list, tuple)):  # multi-label columns (DocVQA question_types): the first label
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def stratified_indices(labels: list, limit: int, seed: int = 0) -> list[int]:
    """`limit` row indices drawn without replacement, each label keeping its share of the rows
    (largest remainder; a label gets at least one row while the limit allows), seeded. Sorted."""
    if limit >= len(labels):
        return list(range(len(labels)))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, value in enumerate(labels):
        groups[_label(value)].append(i)
    order = sorted(groups)
    quota = {k: limit * len(groups[k]) / len(labels) for k in order}
    counts = {k: int(quota[k]) for k in order}
    if limit >= len(order):  # every label present at least once
        for k in order:
            counts[k] = max(counts[k], 1)
    while sum(counts.values()) > limit:  # the minimum of one is paid by labels that keep more than one
        k = max((g for g in order if counts[g] > 1), key=lambda g: (counts[g] - quota[g], counts[g]))
        counts[k] -= 1
    for k in sorted(order, key=lambda g: (-(quota[g] - counts[g]), g)):
        if sum(counts.values()) >= limit:
            break
        if counts[k] < len(groups[k]):
            counts[k] += 1
    rng = random.Random(seed)
    chosen = [i for k in order for i in rng.sample(groups[k], min(counts[k], len(groups[k])))]
    return sorted(chosen)


# --- one row → one item ----------------------------------------------------------------------------
def _as_text(value) -> str:
    """A stored answer or question as text: integral floats without '.0' (a parquet column of
    numbers turns '3' into 3.0), everything else by str()."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def _references(value, path: str) -> list:
    """The answers under `path`: a string, a number, a list of them, a list of dicts
    (VQAv2 `answers.answer`) or a dict of lists (the same, stored as a Sequence feature)."""
    parts = path.split(".")[1:]
    for key in parts:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, (list, tuple)):
            value = [v.get(key) if isinstance(v, dict) else None for v in value]
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None and not isinstance(v, (dict, list))]
    return [value]


def _options(value, item_id: str, column: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # MMMU stores the list as its Python text
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise SuiteError(f"item {item_id}: column '{column}' holds text that is not a list of options") from None
    if not isinstance(value, (list, tuple)) or len(value) > len(LETTERS):
        raise SuiteError(f"item {item_id}: column '{column}' is not a list of at most {len(LETTERS)} options")
    return [_as_text(v) for v in value]


def _render_prompt(spec: SuiteSpec, row: dict, item_id: str, options: list[str]) -> str:
    p, cols = spec.prompt, spec.columns
    if cols.prompt:
        question = row[cols.prompt]
        if question is None:
            raise SuiteError(f"item {item_id}: question column '{cols.prompt}' is null")
        question = _as_text(question)
        question = question.strip() if p.strip else question
        question = question.capitalize() if p.capitalize else question
        if spec.prompt_template != "{prompt}":  # the older single-template form; data is never parsed
            question = spec.prompt_template.replace("{prompt}", question)
    else:
        question = p.text or ""
    context = _as_text(row[cols.context]) if cols.context and row.get(cols.context) else ""
    text = (f"Context: {context}\n" if context else "") + question
    if options:
        text += "\n" + "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return f"{p.pre}{text}{p.post}"


def _item_references(spec: SuiteSpec, row: dict, item_id: str, options: list[str]) -> tuple[str, ...]:
    path = spec.columns.references
    if not path:
        return ()
    raw = _references(row[path.split(".")[0]], path)
    if spec.references_format == "index":
        refs = []
        for value in raw:
            try:
                index = int(value)
            except (TypeError, ValueError):
                raise SuiteError(f"item {item_id}: answer {value!r} is not an option index") from None
            if not 0 <= index < len(options):
                raise SuiteError(f"item {item_id}: answer index {index} is outside its {len(options)} options")
            refs += [LETTERS[index], options[index]]  # the letter, then the option's text
        return tuple(refs)
    refs = [_as_text(v) for v in raw]
    if options and len(refs) == 1 and refs[0].strip() in LETTERS[:len(options)]:  # MMMU: a letter is stored
        refs.append(options[LETTERS.index(refs[0].strip())])
    return tuple(refs)


def _raw_image(value, item_id: str, spec: SuiteSpec, column: str) -> bytes:
    if isinstance(value, dict):
        raw = value.get("bytes")
        if raw is None and value.get("path"):
            path = Path(value["path"])
            path = path if spec.data_format == "hub" and path.is_absolute() else _inside(spec.root, value["path"])
            try:
                raw = path.read_bytes()
            except IsADirectoryError:
                raise SuiteError(f"item {item_id}: image path {path} is a directory, not an image file") from None
            except OSError as exc:
                raise SuiteError(f"item {item_id}: image file {path} cannot be read ({exc.strerror})") from None
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif value is None:
        raise SuiteError(f"item {item_id}: image column '{column}' is null")
    else:
        raise SuiteError(f"item {item_id}: image column '{column}' holds {type(value).__name__}, not image bytes")
    if not raw:
        raise SuiteError(f"item {item_id}: image is empty")
    return raw


def _check_columns(spec: SuiteSpec, table: _Table) -> None:
    cols = spec.columns
    wanted = [cols.id, cols.image, cols.prompt, cols.references, cols.task, cols.metric, cols.options,
              cols.context, cols.stratify, *(rule.column for rule in spec.keep)]
    for column in [c.split(".")[0] for c in wanted if c]:
        if column not in table.column_names:
            raise SuiteError(f"{spec.source}: columns: '{column}' is not a column of the dataset "
                             f"(it has: {', '.join(table.column_names)})")


def load_suite(spec: SuiteSpec, limit: int | None = None, seed: int = 0) -> Suite:
    """Load and check every item of a suite, or a seeded stratified draw of `limit` of them
    (strata: the `stratify` column, else the task column), in dataset order."""
    table = open_table(spec)
    _check_columns(spec, table)
    cols = spec.columns
    if table.num_rows == 0:
        raise SuiteError(f"{spec.source}: the dataset has no items")
    kept = list(range(table.num_rows))
    for rule in spec.keep:
        values, pattern = table.column(rule.column), re.compile(rule.not_matching or "(?!)")
        kept = [i for i in kept if (rule.equals is None or _as_text(values[i]) == rule.equals)
                and not pattern.search("" if values[i] is None else _as_text(values[i]))]
    if not kept:
        raise SuiteError(f"{spec.source}: no row passes the suite's keep rules")
    if limit is not None and limit < len(kept):
        strata = cols.stratify or cols.task
        labels = table.column(strata) if strata else [""] * table.num_rows
        indices = [kept[i] for i in stratified_indices([labels[i] for i in kept], limit, seed)]
    else:
        indices = kept

    items, seen, digest = [], set(), hashlib.sha256()
    for index, row in zip(indices, table.rows(indices), strict=True):
        item_id = _as_text(row[cols.id]) if cols.id and row.get(cols.id) is not None else f"{spec.split}-{index}"
        if item_id in seen:
            raise SuiteError(f"{spec.source}: item id '{item_id}' appears twice")
        seen.add(item_id)
        options = _options(row[cols.options], item_id, cols.options) if cols.options else []
        image, mime, converted = prepare_image(_raw_image(row[cols.image], item_id, spec, cols.image), item_id,
                                               spec.max_image_pixels, spec.large_images)
        item = SuiteItem(
            id=item_id, task=_as_text(row[cols.task]) if cols.task and row.get(cols.task) is not None
            else spec.default_task,
            metric=_as_text(row[cols.metric]) if cols.metric else spec.default_metric,
            prompt=_render_prompt(spec, row, item_id, options),
            references=_item_references(spec, row, item_id, options),
            image_bytes=image, image_mime=mime, converted_from=converted, system_prompt=spec.system_prompt,
        )
        if item.metric not in METRICS:
            raise SuiteError(f"item {item_id}: unknown metric '{item.metric}' (known: {', '.join(METRICS)})")
        if not item.references:
            raise SuiteError(f"item {item_id}: no reference answer, but metric '{item.metric}' needs one")
        fields = [item.id, item.task, item.metric, item.prompt, item.references]
        digest.update(json.dumps(fields + ([item.system_prompt] if item.system_prompt else [])).encode())
        digest.update(hashlib.sha256(image).digest())
        items.append(item)
    return Suite(spec=spec, items=tuple(items), content_hash=digest.hexdigest())


def describe(spec: SuiteSpec) -> str:
    """Where a suite's data comes from, for `bench suites` (nothing is downloaded)."""
    if spec.local_copy:
        return f"local copy {spec.local_copy}"
    if spec.data_format == "hub":
        return f"hub {spec.data_path}" + (f" [{spec.subset}]" if spec.subset else "") + f" split {spec.split}"
    return f"{spec.data_format} {spec.data_path}"
