"""Every service has the same shape (docs/architecture.md): only the store talks SQL, the domain is
plain Python, modules do not import each other in circles, and the docs name files that exist."""

from __future__ import annotations

import ast
import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
KIT = "clinic_platform"
SQL_LIBRARIES = {"sqlalchemy", "asyncpg"}


def service_packages() -> list[Path]:
    return sorted(p for p in SERVICES.iterdir() if (p / "__init__.py").exists() and p.name != KIT)


def own_modules(package: Path) -> list[Path]:
    """A service's modules, without its Alembic migrations (which are SQL by nature)."""
    return sorted(p for p in package.rglob("*.py") if "migrations" not in p.relative_to(package).parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def is_store(package: Path, module: Path) -> bool:
    relative = module.relative_to(package).parts
    return relative == ("store.py",) or relative[0] == "store"


@pytest.mark.parametrize("package", service_packages(), ids=lambda p: p.name)
def test_only_the_store_imports_sqlalchemy_or_asyncpg(package: Path):
    offenders = {
        str(module.relative_to(SERVICES)): sorted(top_level(imported(module)) & SQL_LIBRARIES)
        for module in own_modules(package)
        if not is_store(package, module) and top_level(imported(module)) & SQL_LIBRARIES
    }
    assert offenders == {}


@pytest.mark.parametrize("package", service_packages(), ids=lambda p: p.name)
def test_the_domain_is_plain_python(package: Path):
    domain = package / "domain.py"
    if not domain.exists():
        pytest.skip(f"{package.name} has no rules of its own yet")
    assert top_level(imported(domain)) & (SQL_LIBRARIES | {"grpc"}) == set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SERVICES).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules under services/ it imports (`from a import b` may name a module b)."""
    modules = {module_name(p): p for p in SERVICES.rglob("*.py") if "migrations" not in p.parts}
    graph = {}
    for name, path in modules.items():
        graph[name] = {target for target in imported(path) if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_in_services():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A path in backquotes: `services/payment/store.py`, `gateway/strict_json.lua`, `store.py` (not a
# URL path such as `/.well-known/jwks.json`).
NAMED_FILE = re.compile(r"`([\w.-][\w./-]*\.(?:py|lua|yaml|json|md|proto|sh))`")
RUN_TIME_STATE = "var/"  # the local stack's state: made by `./mesh up`, never committed
SHARED = ROOT.parent / "shared"  # DESIGN.md, shared with the project beside the repository


@functools.cache
def repository_files() -> frozenset[str]:
    """Files in the repository, committed or new, without what git ignores (e.g. `var/`)."""
    listed = subprocess.run(  # noqa: S603 (a fixed git command)
        [
            shutil.which("git") or "git",
            "-c",
            "safe.directory=*",
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return frozenset(listed.stdout.splitlines())


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_the_docs_name_files_that_exist(document: Path):
    files = repository_files()
    basenames = {f.rsplit("/", 1)[-1] for f in files} | {p.name for p in SHARED.glob("*")}
    missing = []
    for name in NAMED_FILE.findall(document.read_text()):
        exists = (
            name in basenames
            if "/" not in name
            else any(f == name or f.endswith("/" + name) for f in files) or (ROOT / "docs" / name).exists()
        )
        if not exists and not name.startswith(RUN_TIME_STATE):
            missing.append(name)
    assert missing == []
