"""The house rules of the package, read from the code: no import loops, public faces between
packages, comments that cite files which exist.

- A module-level import cycle makes import order matter (a name missing from a half-initialised
  module); imports inside functions are how a lazy dependency is expressed and are allowed.
- A module may reach into private (``_``) modules of its own package and of the packages above
  it (their shared helpers); anything else goes through the other package's ``__init__``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dimlapse"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every ``dimlapse`` import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _package_of(path)
    nodes: list[ast.stmt] = []
    if top_level_only:
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # annotations only, never executed
            nodes.append(node)
    else:
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.stmt)]
    out: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("dimlapse")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("dimlapse"):
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{module}.{alias.name}"
                out.append((node.lineno, sub if sub in MODULES else module))
    return out


def test_no_module_level_import_cycles():
    graph = {
        name: {t for _, t in _imports(path, top_level_only=True) if t in MODULES and t != name}
        for name, path in MODULES.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _allowed(importer_package: str, target: str) -> bool:
    """Private parts only inside the importer's own package chain (see the module docstring)."""
    ip, tp = importer_package.split("."), target.split(".")
    n = 0
    while n < min(len(ip), len(tp)) and ip[n] == tp[n]:
        n += 1
    rest = tp[n:]
    return len(rest) <= 1 or not any(part.startswith("_") for part in rest)


def test_no_package_imports_another_packages_private_modules():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {target}"
        for name, path in MODULES.items()
        for line, target in _imports(path, top_level_only=False)
        if not _allowed(_package_of(path), target)
    ]
    assert not offenders, "private modules imported across packages:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("importer", "target", "allowed"),
    [
        ("dimlapse.analyze.jobs", "dimlapse.analyze._validate", True),  # a parent's helper
        ("dimlapse.analyze.jobs", "dimlapse.analyze.jobs._phases", True),  # its own module
        ("dimlapse.analyze._transitions", "dimlapse.analyze.jobs._trajectories", False),
        ("dimlapse.pipelines.study", "dimlapse.analyze.report._markdown", False),
        ("dimlapse.pipelines.study", "dimlapse.analyze.report", True),  # a public face
    ],
)
def test_the_private_import_rule_itself(importer, target, allowed):
    assert _allowed(importer, target) is allowed


def test_every_package_has_a_public_face():
    faceless = []
    for init in sorted(PKG.rglob("__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree)
        names = {
            t.id
            for n in tree.body
            for t in (n.targets if isinstance(n, ast.Assign) else [getattr(n, "target", None)])
            if isinstance(t, ast.Name)
        }
        public_pkg = not any(p.startswith("_") for p in init.parent.relative_to(ROOT).parts)
        if not doc or (public_pkg and "__all__" not in names and init.parent != PKG):
            faceless.append(str(init.relative_to(ROOT)))
    assert not faceless, "packages without a docstring and __all__: " + ", ".join(faceless)


CITED_FILE = re.compile(r"(?<![\w./-])((?:[\w-]+/)*_?[\w-]+\.(?:py|md|html))\b")


def test_comments_cite_files_that_exist():
    """A path to a repository file in a comment or docstring must exist (relative to the repository,
    to ``dimlapse/``, or to the citing module's folder)."""
    missing = []
    for path in sorted(PKG.rglob("*.py")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for cited in CITED_FILE.findall(line):
                if "/" not in cited and not cited.startswith("_"):
                    continue  # a bare public file name (setup.py, conftest.py) is not a citation
                roots = (ROOT, PKG, path.parent, path.parent.parent)
                if not any((r / cited).exists() for r in roots):
                    missing.append(f"{path.relative_to(ROOT)}:{i}: {cited}")
    assert not missing, "comments cite files that do not exist:\n" + "\n".join(missing)
