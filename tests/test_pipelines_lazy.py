"""The ``dimlapse`` command loads torch only for the commands that build or train a model."""

import subprocess
import sys

import pytest

import dimlapse.pipelines
import dimlapse.pipelines.zoo


def test_cli_and_analyze_import_without_torch():
    code = (
        "import sys\n"
        "import dimlapse.pipelines.cli._main as m\n"
        "m.build_parser()\n"
        "from dimlapse.pipelines import DATASETS, MODELS, Recipe\n"
        "from dimlapse.pipelines.cli import _analyze\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("package", [dimlapse.pipelines, dimlapse.pipelines.zoo])
def test_every_exported_name_resolves(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        package.nothing_here  # noqa: B018
