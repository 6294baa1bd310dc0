"""The ``ingest`` command: a run store from a series of checkpoints (``dimlapse.capture.ingest``).

Activations need the checkpoints' architecture: ``--model module:factory`` names a callable
returning an ``nn.Module``, ``--probe file.pt`` a ``torch.save``d probe batch.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from ._errors import CLIError


def add_ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sources",
        nargs="+",
        help="checkpoints in step order: torch.save files, .safetensors files, Hugging Face "
        "save_pretrained folders, torch.distributed.checkpoint directories",
    )
    p.add_argument("--store", required=True, help="the run store to create (path or URL)")
    p.add_argument(
        "--steps",
        help="comma-separated step per source (default: from the checkpoints' metadata or names)",
    )
    p.add_argument(
        "--params", action="append", help="name glob of tensors to read (repeatable; default all)"
    )
    p.add_argument(
        "--model",
        help="module:callable returning the checkpoints' nn.Module (default: none, weights only)",
    )
    p.add_argument(
        "--probe",
        help="torch.save'd probe batch; with --model, activations replayed (default: none)",
    )
    p.add_argument("--codec", help="codec of float arrays (default: the Recorder's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run store")


def _factory(spec: str) -> Any:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise CLIError(
            f"Expected `--model` as module:callable (e.g. mypkg.models:make), got {spec!r}"
        )
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise CLIError(f"Could not load `--model` {spec!r}: {e}") from e


def run_ingest(args: argparse.Namespace) -> int:
    """``ingest``: read the series, write the store, print what it holds."""
    import torch

    from dimlapse.capture import RunExistsError, ingest

    steps = None
    if args.steps:
        try:
            steps = [int(s) for s in args.steps.split(",")]
        except ValueError as e:
            raise CLIError(f"Expected `--steps` as comma-separated ints, got {args.steps!r}") from e
    model = _factory(args.model) if args.model else None
    probe = None
    if args.probe:
        try:
            probe = torch.load(args.probe, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise CLIError(f"Could not read `--probe` {args.probe!r}: {e}") from e
    try:
        out = ingest(args.sources, args.store, steps=steps, params=args.params, probe=probe,
                     model=model, overwrite=args.overwrite, codec=args.codec)  # fmt: skip
    except RunExistsError as e:
        raise CLIError(f"{e} (use --overwrite)") from e
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    s = out["steps"]
    print(f"{args.store}: {out['snapshots']} snapshots, steps {s[0]}..{s[-1]}")
    if out["duplicate_snapshots"]:
        print(
            f"duplicate snapshots (weights byte-identical to the previous): "
            f"{out['duplicate_snapshots']}"
        )
    if out["replayed"]:
        print(f"activations replayed for {out['replayed']} snapshots")
    return 0
