"""Benchmarks, each a subcommand of ``dimlapse bench``; each prints ratios measured side by side
in one run (the machines are shared and noisy), never a timed unit test.

===============  ======================================================================
``capture``      capture overhead per mode against plain training, with control arms
``analyze``      the analysis jobs against a naive SVD loop; end-to-end and per job
``transitions``  detectors' false alarms on null series and power on planted events
``integrations`` the Hugging Face and Lightning callbacks' overhead
``gpu``          capture on a CUDA device (ResNet-18, a small ViT)
``sharded``      per-rank memory of sharded (FSDP2) capture against the shard, and a gather
===============  ======================================================================
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

#: benchmark -> (module, help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "capture": ("._capture", "capture overhead per mode, with control arms"),
    "analyze": ("._analyze", "analysis jobs against a naive SVD loop"),
    "transitions": ("._transitions", "detector calibration and power"),
    "integrations": ("._integrations", "trainer callbacks' overhead"),
    "gpu": (".gpu", "capture on a CUDA device"),
    "sharded": ("._sharded", "per-rank memory of sharded (FSDP2) capture"),
}


def _module(name: str) -> Any:
    return importlib.import_module(BENCHMARKS[name][0], __name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``dimlapse bench BENCHMARK [options]``: one sub-parser per benchmark."""
    from ..cli import HelpFormatter

    sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (_, help_) in BENCHMARKS.items():
        q = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        _module(name).add_arguments(q)


def main(args: argparse.Namespace) -> int:
    """Run the chosen benchmark; its exit status."""
    return int(_module(args.benchmark).main(args) or 0)


__all__ = ["BENCHMARKS", "add_arguments", "main"]
