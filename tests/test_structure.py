"""The package's shape: one import root, a lock file that satisfies pyproject, layers that depend downwards,
Kafka clients made only in ``inflow.kafka``, no import circles, no private faust attributes."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = {
    "inflow": ROOT / "inflow",
    "inflow.config": ROOT / "config",
    "inflow.schemas": ROOT / "schemas",
    "inflow.producers": ROOT / "producers",
    "inflow.processors": ROOT / "processors",
    "inflow.sinks": ROOT / "sinks",
}
COMPONENTS = (
    "inflow.producers.bulk_api",
    "inflow.producers.s3_import",
    "inflow.processors",
    "inflow.sinks.streams",
)
# Lower layers must not import the layers above them.
LAYERS = [
    ("inflow.errors",),
    ("inflow.config",),
    ("inflow.schemas",),
    ("inflow.kafka",),
    ("inflow.workspaces",),
    ("inflow.observability",),
    COMPONENTS,
    ("inflow.local", "inflow.runtime"),
    # the console uses every component's operations; the demo drives the CLI's functions
    ("inflow.cli", "inflow.supervisor", "inflow.status", "inflow.console", "inflow.demo"),
]
ENTRY_POINTS = ("cli", "run")  # a component's command-line entry modules belong to the CLI layer


def _modules() -> Iterator[tuple[str, Path]]:
    for package, folder in SOURCE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if package == "inflow" and rel.parts[0] in {
                "config",
                "schemas",
                "producers",
                "processors",
                "sinks",
            }:
                continue  # the symlinks to the layout's top-level folders, walked under their own names
            parts = [p for p in rel.with_suffix("").parts if p != "__init__"]
            yield ".".join([package, *parts]), path


MODULES = dict(_modules())


def _imports(name: str, path: Path) -> set[str]:
    """Every inflow module ``name`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    if module.rpartition(".")[2] in ENTRY_POINTS and module.startswith(COMPONENTS):
        return len(LAYERS) - 1
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def test_modules_are_found() -> None:
    assert "inflow.kafka.producer" in MODULES and "inflow.config.settings" in MODULES
    assert "inflow.producers.bulk_api.routes" in MODULES and "inflow.sinks.streams.cli" in MODULES


def test_layers_depend_downwards_only() -> None:
    upward = []
    for module, imported in GRAPH.items():
        mine = _layer(module)
        for target in imported:
            theirs = _layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_component_imports_another() -> None:
    crossing = []
    for module, imported in GRAPH.items():
        own = next((c for c in COMPONENTS if module == c or module.startswith(c + ".")), None)
        if own is None:
            continue
        for target in imported:
            other = next((c for c in COMPONENTS if target == c or target.startswith(c + ".")), None)
            if other is not None and other != own:
                crossing.append(f"{module} -> {target}")
    assert crossing == []


def test_no_import_circles() -> None:
    """Tarjan's strongly connected components over the import graph (function-level imports included)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target.startswith(node + "."):
                continue  # a package importing its own submodules (``__init__``) is not a circle
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    sys.setrecursionlimit(10_000)
    for node in GRAPH:
        if node not in index:
            visit(node)
    assert circles == []


def test_kafka_clients_are_made_only_in_the_kafka_layer() -> None:
    makers = {"Producer", "Consumer", "AdminClient", "SerializingProducer", "DeserializingConsumer"}
    found = []
    for module, path in MODULES.items():
        if module.startswith("inflow.kafka"):
            continue
        tree = ast.parse(path.read_text())
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("confluent_kafka")
            for alias in node.names
            if alias.name in makers
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported:
                found.append(f"{module}:{node.lineno} {node.func.id}(")
    assert found == []


def test_no_private_faust_attributes() -> None:
    banned = (
        "_db_for_partition",
        "_set_current_event",
        "_paused_partitions",
        "set_persisted_offset",
        "_on_partitions_assigned",
        "_committed_offset",
    )
    found = [
        f"{module}: {word}" for module, path in MODULES.items() for word in banned if word in path.read_text()
    ]
    assert found == []


def test_lock_file_pins_every_declared_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        declared += [Requirement(r) for r in extra]
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.split(";")[0].strip()
    problems = []
    for req in declared:
        pinned = pins.get(req.name.lower().replace("_", "-"))
        if pinned is None:
            problems.append(f"{req.name} is not in requirements.lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req.name}=={pinned} is outside {req.specifier}")
    assert problems == [], "run `make lock`: " + "; ".join(problems)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path_factory.mktemp("source") / "inflow"
    skip = shutil.ignore_patterns(
        ".git", ".venv", ".inflow", "build", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(ROOT, source, symlinks=True, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("inflow-*.whl"))


def test_wheel_has_one_import_root_with_its_data_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"inflow"}
    for data in (
        "inflow/config/topics.yaml",
        "inflow/config/defaults.yaml",
        "inflow/schemas/UserProfile.avsc",
        "inflow/local/kafka-pom.xml",
        "inflow/kafka/producer.py",
    ):
        assert data in names


def test_installed_wheel_exposes_inflow_and_nothing_generic(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import importlib.util, inflow.config.settings, inflow.config.topics as t\n"
        f"assert inflow.config.settings.__file__.startswith({str(target)!r})\n"
        "assert t.load_catalogue('x')\n"
        "print([n for n in ('config', 'schemas', 'producers', 'processors', 'sinks')"
        " if importlib.util.find_spec(n) is not None])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
