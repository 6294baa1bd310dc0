"""Package discovery (everything else is in pyproject.toml).

The folders ``capture/``, ``analyze/`` and ``pipelines/`` install as ``dimlapse.capture``,
``dimlapse.analyze`` and ``dimlapse.pipelines`` (the repository root is the ``dimlapse``
package). Sub-packages are found here, so a new one is installed without editing a list.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOTS = ("capture", "analyze", "pipelines")


class _BuildPy(build_py):
    """The root package is the repository folder: leave this file out of it."""

    def find_package_modules(self, package, package_dir):
        found = super().find_package_modules(package, package_dir)
        return [m for m in found if not (package == "dimlapse" and m[1] == "setup")]


sub = find_packages(include=[p for r in ROOTS for p in (r, f"{r}.*")])
setup(
    packages=["dimlapse", *(f"dimlapse.{p}" for p in sub)],
    package_dir={"dimlapse": "."},
    cmdclass={"build_py": _BuildPy},
)
