"""The README's measured tables, regenerated from the benchmark outputs kept in ``docs/``.

Each table sits in README.md between ``<!-- table:NAME ... -->`` and ``<!-- /table:NAME -->``
and is rebuilt from the printed output of one or more benchmark runs (``SOURCES``), with the
machine and thread count those runs state. To change a table, add or replace an output file
in ``docs/`` and run ``make readme-tables``; ``--check`` (run by the test suite) fails when
the README and ``docs/`` disagree.

    python -m dimlapse.pipelines.bench._readme_tables [--check] [--root DIR]
"""

from __future__ import annotations

import argparse
import difflib
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

__all__ = ["SOURCES", "TABLES", "main", "render", "tables"]

#: The machine every kept output was measured on (the development machines of this project).
MACHINE = "the 2-vCPU CPU-only development machine"

#: Capture-overhead runs, in the order measured: (column label, file in docs/).
CAPTURE_RUNS = (
    ("run 1", "bench-capture-run1.txt"),
    ("run 2", "bench-capture.txt"),
    ("run 3", "bench-capture-run3.txt"),
    ("run 4", "bench-capture-run4.txt"),
    ("run 5", "bench-capture-run5.txt"),
    ("run 6", "bench-capture-run6.txt"),
)
CODEC_RUN = "bench-capture.txt"  # run 2: the last codec table whose writer CPU includes the probe
LARGE_RUN = "bench-capture.txt"  # run 2 (run 4 agrees within 5 MB; run 5 skipped it)
TRANSITIONS_RUN = "bench-transitions.txt"
ANALYZE_RUN = "bench-analyze.txt"

ARMS = {
    "full": "full capture",
    "weights": "weights only",
    "spectra": "spectra mode",
    "weights@1": "weights only, at every step",
    "floor": "floor: a separate process doing only the probe forward per capture",
    "spectra-floor": "spectra floor: the same plus the spectra's Gram + eigvalsh",
    "busy-process": "busy process: one BLAS thread, always busy, in a separate process",
    "ndtracker": "ndtracker 2.0 (inline metrics on the training batch)",
}
CODECS = {
    "none": "`none`",
    "lz4": "`lz4` (blosc lz4 + bit-shuffle, default)",
    "zstd": "`zstd` (level 1)",
    "blosc-zstd": "`blosc-zstd` (bit-shuffle)",
    "bitround-10": "`bitround-10` + blosc zstd (lossy, ~float16 precision)",
    "float16": "`float16` + blosc zstd (lossy)",
}
FAMILIES = {
    "white": "white noise",
    "ar09": "AR(1), phi 0.9",
    "decay_ar": "exponential decay + AR(1) 0.5",
    "staircase": "staircase: 3-6 steps of 3-10 SD, gaps 10-40, white",
    "staircase_ar": "staircase on AR(1) 0.5 noise",
    "ramp": "ramp of 10-30 samples, 6-10 SD",
    "step_in_trend": "step of 3-10 SD inside a linear trend",
}


class SourceError(ValueError):
    """A benchmark output in docs/ lacks what a table needs."""


def _read(docs: Path, name: str) -> list[str]:
    path = docs / name
    if not path.exists():
        raise SourceError(f"Expected the benchmark output {path} (a README table's source)")
    return path.read_text().splitlines()


def _section(lines: list[str], header: str, name: str) -> list[list[str]]:
    """Whitespace-split rows under the first line matching the regex `header`, up to a line
    that is not a row (blank, indented, or prose: a ``:`` or ``=`` in it)."""
    for i, line in enumerate(lines):
        if re.match(header, line):
            rows = []
            for row in lines[i + 1 :]:
                fields = row.split()
                if len(fields) < 2 or row[0] == " " or "=" in row or ":" in row:
                    break
                rows.append(fields)
            return rows
    raise SourceError(f"Expected a table headed {header!r} in docs/{name}")


def _threads(lines: list[str], name: str) -> str:
    m = re.search(r"(\d+) torch threads?", "\n".join(lines))
    if not m:
        raise SourceError(f"Expected docs/{name} to state its torch thread count")
    return f"{m.group(1)} torch thread" + ("" if m.group(1) == "1" else "s")


def _md(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _span(values: list[float], fmt: str, unit: str) -> str:
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return f"{lo} {unit}" if lo == hi else f"{lo}-{hi} {unit}"


def _bytes(values: list[float]) -> str:
    """A byte count (or range) in MB, or KB below 0.1 MB."""
    if max(values) < 1e5:
        return _span([v / 1e3 for v in values], ".0f", "KB")
    return _span([v / 1e6 for v in values], ".2f", "MB")


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("x"))


def capture_overhead(docs: Path) -> str:
    """Ratios per run and arm; per-capture costs as the range over the runs."""
    runs = {}
    for label, name in CAPTURE_RUNS:
        lines = _read(docs, name)
        runs[label] = (_section(lines, r"arm\s+ratio", name), _threads(lines, name))
    threads = {t for _, t in runs.values()}
    arms = [a for a in ARMS if any(a in {r[0] for r in rows} for rows, _ in runs.values())]
    header = ["arm", *runs, "median", "training thread per capture", "writer CPU per snapshot",
              "stored per snapshot"]  # fmt: skip
    body = []
    for arm in arms:
        ratios, train, writer, stored = [], [], [], []
        for rows, _ in runs.values():
            row = next((r for r in rows if r[0] == arm), None)
            ratios.append(None if row is None else _number(row[1]))
            if row is not None and len(row) >= 6:
                train.append(_number(row[3]))
                writer.append(_number(row[4]))
                stored.append(_number(row[5]))
        measured = [r for r in ratios if r is not None]
        cells = ["" if r is None else f"{r:.3f}x" for r in ratios]
        median = f"{statistics.median(measured):.3f}x" if len(measured) > 1 else ""
        extra = ["", "", ""]
        if train:
            extra = [_span(train, ".2f", "ms"), _span(writer, ".1f", "ms"), _bytes(stored)]
        body.append([ARMS[arm], *cells, median, *extra])
    files = ", ".join(f"`docs/{n}`" for _, n in CAPTURE_RUNS)
    return (
        f"Measured on {MACHINE}, {' / '.join(sorted(threads))}; outputs {files}; an empty "
        "cell: the arm was not in that run. Per-capture columns: the range over the runs.\n\n"
        + _md(header, body)
    )


def codecs(docs: Path) -> str:
    """Stored bytes, ratio and writer CPU per codec, from one run's codec table."""
    lines = _read(docs, CODEC_RUN)
    rows = _section(lines, r"codec\s+bytes/snapshot", CODEC_RUN)
    body = [
        [CODECS.get(r[0], f"`{r[0]}`"), _bytes([_number(r[1])]), r[3], f"{_number(r[4]):.1f} ms"]
        for r in rows
    ]  # fmt: skip
    raw = _number(rows[0][2])
    return (
        f"Measured on {MACHINE}, {_threads(lines, CODEC_RUN)}, one whole chunk (64 snapshots) "
        f"of full capture, {raw:,.0f} bytes raw per snapshot; output `docs/{CODEC_RUN}`.\n\n"
        + _md(["codec", "stored per snapshot", "ratio", "writer CPU per snapshot"], body)
    )


def large_model(docs: Path) -> str:
    """Step time, peak memory and bytes per capture step of the ~30M-parameter model."""
    lines = _read(docs, LARGE_RUN)
    rows = _section(lines, r"mode\s+s/step", LARGE_RUN)
    full = next(_number(r[4]) for r in rows if r[0] == "full")
    body = []
    for r in rows:
        writer = "" if r[0] == "plain" else f"{r[3]} MB"
        stored = _number(r[4])
        if not stored:
            cell = ""
        elif stored >= 1e6:
            cell = f"{stored / 1e6:.0f} MB"
        else:
            cell = f"{stored / 1e3:.0f} KB ({100 * stored / full:.2f} % of full)"
        body.append([r[0], f"{_number(r[1]):.2f}", f"{r[2]} MB", writer, cell])
    header = ["mode", "s/step", "trainer peak RSS", "writer peak RSS", "stored per capture step"]
    return f"Measured on {MACHINE}; output `docs/{LARGE_RUN}`.\n\n" + _md(header, body)


def transitions(docs: Path) -> str:
    """Null share / recall and false events per detector and family."""
    lines = _read(docs, TRANSITIONS_RUN)
    start = next(
        (i for i, x in enumerate(lines) if x.startswith("| family |")), None
    )  # the Markdown table the benchmark prints
    if start is None:
        raise SourceError(f"Expected a '| family |' table in docs/{TRANSITIONS_RUN}")
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        body.append([FAMILIES.get(cells[0], cells[0]), *cells[1:]])
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    seeds = re.search(r"--seeds (\d+)", "\n".join(lines))
    how = f"{seeds.group(1)} seeds" if seeds else "seeds as printed"
    return f"Measured on {MACHINE} ({how}); output `docs/{TRANSITIONS_RUN}`.\n\n" + _md(
        header, body
    )


_STAGES = {  # bench analyze's row label -> the README's
    r"naive: read \+ full SVD, 1 process": "naive: read + one full `numpy.linalg.svd` per "
    "matrix, one process",
    r"spectra: dask, 1 worker": "spectra, Dask, 1 worker (Gram + `eigvalsh` on the smaller "
    "side, float64)",
    r"spectra: dask, (\d+) workers": "spectra, Dask, {} workers",
    r"dimensionality job \(all metrics\)": "dimensionality job, all metrics",
}


def analysis(docs: Path) -> str:
    """The spectra stages against the naive SVD loop: from ``bench analyze``'s printed rows,
    or from a Markdown ``| stage |`` table where the file holds one (a transcription)."""
    lines = _read(docs, ANALYZE_RUN)
    transcribed = bool(lines) and lines[0].startswith("# NOT a saved benchmark output")
    start = next((i for i, x in enumerate(lines) if x.startswith("| stage |")), None)
    if start is not None:
        table = []
        for line in lines[start:]:
            if not line.startswith("|"):
                break
            table.append(line)
        text = "\n".join(table)
    else:
        body = []
        for pattern, label in _STAGES.items():
            for line in lines:
                m = re.match(rf"\s+{pattern}\s+([\d.]+) s\s+([\d.]+) snapshots/s", line)
                if m:
                    *groups, seconds, rate = m.groups()
                    body.append([label.format(*groups), f"{float(seconds):.1f} s",
                                 f"{float(rate):.0f}"])  # fmt: skip
                    break
        if not body:
            raise SourceError(f"Expected bench analyze's stage rows in docs/{ANALYZE_RUN}")
        text = _md(["stage", "wall time", "snapshots/s"], body)
    if transcribed:  # say so beside the table, not only in the file
        return (
            f"Measured on {MACHINE}, 2 Dask workers, by an earlier version; source "
            f"`docs/{ANALYZE_RUN}`: a transcription of that version's table (its printed "
            "output was not kept; the file's header says how to replace it).\n\n" + text
        )
    return f"Measured on {MACHINE}; output `docs/{ANALYZE_RUN}`.\n\n" + text


#: Table name (its README markers) -> the function that renders it from docs/.
TABLES: dict[str, Callable[[Path], str]] = {
    "capture-overhead": capture_overhead,
    "codecs": codecs,
    "large-model": large_model,
    "transitions": transitions,
    "analysis": analysis,
}
SOURCES = {
    "capture-overhead": [n for _, n in CAPTURE_RUNS],
    "codecs": [CODEC_RUN],
    "large-model": [LARGE_RUN],
    "transitions": [TRANSITIONS_RUN],
    "analysis": [ANALYZE_RUN],
}


def _wrap(text: str) -> str:
    """The caption (the text before the table) wrapped at 100 columns, like the README."""
    caption, sep, table = text.partition("\n\n")
    return textwrap.fill(caption, width=100, break_on_hyphens=False) + sep + table


def _markers(name: str) -> tuple[str, str]:
    sources = ", ".join(f"docs/{s}" for s in SOURCES[name])
    begin = f"<!-- table:{name} (generated from {sources} by `make readme-tables`) -->"
    return begin, f"<!-- /table:{name} -->"


def tables(docs: Path) -> dict[str, str]:
    """Every table, rendered from the outputs in `docs`."""
    return {name: _wrap(render_one(docs)) for name, render_one in TABLES.items()}


def render(readme: str, docs: Path) -> str:
    """`readme` with the text between each table's markers regenerated.

    A table whose markers are absent is left out; a begin marker without its end is an error.
    """
    for name, text in tables(docs).items():
        begin, end = _markers(name)
        pattern = re.compile(rf"<!-- table:{re.escape(name)}\b.*?-->\n(.*?)<!-- /table:"
                             rf"{re.escape(name)} -->", re.S)  # fmt: skip
        if f"<!-- table:{name} " not in readme:
            continue
        found = pattern.search(readme)
        if found is None:
            raise SourceError(f"README.md has {begin!r} but not {end!r} after it")
        readme = readme[: found.start()] + f"{begin}\n{text}\n{end}" + readme[found.end() :]
    return readme


def main(argv: list[str] | None = None) -> int:
    """Regenerate README.md's tables (exit 0), or with ``--check`` say whether they are
    current (exit 1 and a diff when not)."""
    p = argparse.ArgumentParser(prog="readme-tables", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    p.add_argument("--root", default=".", help="the checkout holding README.md and docs/")
    args = p.parse_args(argv)
    root = Path(args.root)
    readme = (root / "README.md").read_text()
    try:
        new = render(readme, root / "docs")
    except SourceError as e:
        print(f"readme-tables: {e}", file=sys.stderr)
        return 2
    missing = [n for n in TABLES if f"<!-- table:{n} " not in readme]
    if args.check:
        if new != readme:
            sys.stdout.writelines(
                difflib.unified_diff(
                    readme.splitlines(True), new.splitlines(True), "README.md", "regenerated"
                )
            )
            print("README.md's tables differ from docs/: run `make readme-tables`")
            return 1
        print(f"README.md's {len(TABLES) - len(missing)} tables match docs/")
        return 0
    (root / "README.md").write_text(new)
    print(f"README.md: {len(TABLES) - len(missing)} tables regenerated from {root / 'docs'}")
    if missing:
        print(f"(no markers in README.md for: {', '.join(missing)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
