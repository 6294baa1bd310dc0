"""The store is the only handshake: capture never loads xarray/dask, analyze never loads torch."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "capture": {"xarray", "dask", "distributed"},
    "analyze": {"torch"},
}


def _imported_top_level_names(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
            if node.module.startswith("dimlapse."):
                names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_sources_respect_dependency_rule(package: str) -> None:
    other = "analyze" if package == "capture" else "capture"
    offenders = []
    checked = 0
    for path in sorted((ROOT / "dimlapse" / package).rglob("*.py")):
        checked += 1
        names = _imported_top_level_names(path)
        bad = names & FORBIDDEN[package]
        bad |= {n for n in names if n.startswith(f"dimlapse.{other}")}
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert checked > 10, f"only {checked} files found under dimlapse/{package}"  # can fail
    assert not offenders, "dependency rule broken:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("module", "must_not_load"),
    [
        ("dimlapse.capture", ["xarray", "dask", "distributed"]),
        ("dimlapse.analyze", ["torch"]),
    ],
)
def test_import_does_not_load_forbidden_modules(module: str, must_not_load: list[str]) -> None:
    code = (
        f"import sys, {module}\n"
        f"loaded = [m for m in {must_not_load!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"
