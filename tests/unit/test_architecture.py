"""The house's layout, checked on the code: DEVELOPERS.md's layer table is the one definition of
where each module of harness/ stands, and this test reads it from there.

- every module of harness/ is in exactly one layer of the table;
- a module imports only from its own layer or the layers below; no import cycle;
- the CLI imports only the two orchestration layers (and `errors`, for its exit codes);
- no import of the harness inside a function (it would hide a cycle);
- only store.py names the files of a run folder (everything else reads runs through it)."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

HARNESS = ROOT / "harness"
RUN_FOLDER_FILES = ("manifest.json", "summary.json", "requests.jsonl", "power.csv", "requests.parquet",
                    "power.parquet", "items.parquet", "run.lock")


def layers() -> list[tuple[str, set[str]]]:
    """(layer, modules) from top to bottom, as DEVELOPERS.md's table lists them."""
    text = (ROOT / "DEVELOPERS.md").read_text()
    table = text[text.index("| layer | modules |"):].split("\n\n")[0].splitlines()[2:]
    rows = []
    for row in table:
        _, layer, modules, *_ = row.split("|")
        names = {"harness." + m.removesuffix(".py").replace("/", ".") for m in re.findall(r"`([\w/]+\.py)`", modules)}
        rows.append((layer.strip(), names))
    return rows


def module_name(path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports(path) -> tuple[set[str], list[int]]:
    """Harness modules `path` imports (a `from package import module` counts as the module), and the
    lines of harness imports inside functions."""
    found, nested = set(), []
    tree = ast.parse(path.read_text())
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if (ROOT / (n.replace(".", "/") + ".py")).exists()} or {node.module}
        elif isinstance(node, ast.Import):
            names = {a.name for a in node.names if a.name.startswith("harness")}
            found |= names
            if not names:
                continue
        else:
            continue
        if id(node) in inner:
            nested.append(node.lineno)
    return found, nested


def graph() -> dict[str, set[str]]:
    result = {}
    for path in HARNESS.rglob("*.py"):
        name = module_name(path)
        if path.name == "__init__.py":
            continue  # packages: version strings and docstrings, beneath every layer
        found, nested = imports(path)
        assert not nested, f"{name} imports the harness inside a function (lines {nested})"
        result[name] = {m for m in found if m not in ("harness", "harness.energy", "harness.report",
                                                      "harness.scoring")} - {name}
    return result


def test_every_module_has_one_layer_and_imports_only_its_own_or_lower_layers():
    rank = {}
    for depth, (layer, modules) in enumerate(layers()):
        for module in modules:
            assert module not in rank, f"{module} is listed in two layers (again in {layer})"
            rank[module] = depth
    deps = graph()
    assert set(deps) == set(rank), (f"not in DEVELOPERS.md's layer table: {sorted(set(deps) - set(rank))}; "
                                    f"listed but missing: {sorted(set(rank) - set(deps))}")
    upward = [f"{m} -> {d}" for m, ds in deps.items() for d in ds if rank[d] < rank[m]]
    assert not upward, upward


def test_the_import_graph_has_no_cycle():
    deps, state = graph(), {}

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(deps[module]):
            assert state.get(dep) != "open", " -> ".join([*path, module, dep])
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = "done"

    for module in sorted(deps):
        if module not in state:
            visit(module, [])


def test_the_cli_imports_only_the_orchestration_layers():
    names = [layer for layer, _ in layers()]
    allowed = set().union(*(m for layer, m in layers() if layer in ("commands", "orchestration")))
    assert names[:3] == ["entry point", "commands", "orchestration"]
    assert graph()["harness.cli"] - allowed == {"harness.errors"}


def test_only_the_store_names_the_files_of_a_run_folder():
    sources = [*HARNESS.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    named = [f"{path.relative_to(ROOT)}: {name}" for path in sources if path.name != "store.py"
             for name in RUN_FOLDER_FILES if f'"{name}"' in path.read_text() or f"'{name}'" in path.read_text()]
    assert not named, named
