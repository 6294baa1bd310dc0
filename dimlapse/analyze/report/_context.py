"""Context sections of report.md: the setup against the study's, training dynamics, data health."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from ..jobs import spike_at
from ._claims import claims_of, finite, layers, num
from ._tree import headline, node, significant_steps

STUDY_SETUP = {
    "model": "mlp",
    "data": "MNIST",
    "inputs": 784,
    "steps": 8000,
    "every": 5,
}


def _attr_json(tree: xr.DataTree, key: str) -> dict[str, Any]:
    value = tree.attrs.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


def _model_name(model: object) -> str | None:
    """A recorded model description (``Recorder``'s dict) as one short phrase."""
    if isinstance(model, dict):
        name, n = model.get("class"), model.get("n_parameters")
        return f"{name} ({n:,} parameters)" if name and isinstance(n, int) else name
    return str(model) if model else None


def setup_lines(tree: xr.DataTree) -> list[str]:
    """How this run's setup differs from the study's (stated before any claim)."""
    config, data = _attr_json(tree, "run_config"), _attr_json(tree, "run_dataset")
    probe = _attr_json(tree, "run_probe")
    shape = data.get("input_shape") or (probe.get("shape") or [None])[1:]
    inputs = int(np.prod(shape)) if shape and None not in shape else None
    dim = node(tree, "dimensionality")["dimensionality"]
    here = {
        "model": config.get("model") or _model_name(tree.attrs.get("run_model")),
        "data": data.get("name", config.get("data")),
        "inputs": inputs,
        "steps": config.get("steps", int(dim["step"].max())),
        "every": tree.attrs.get("run_every"),
    }
    diffs = [
        f"{key} {STUDY_SETUP[key]} in the study, "
        + (f"{here[key]} here" if here[key] is not None else "not recorded here")
        for key in STUDY_SETUP
        if str(here[key]) != str(STUDY_SETUP[key])
    ]
    study = (
        f"The study: MLP 784-256-128-10 on {STUDY_SETUP['data']} ({STUDY_SETUP['inputs']} "
        f"inputs), {STUDY_SETUP['steps']:,} steps captured every {STUDY_SETUP['every']}."
    )
    if not diffs:
        return [f"**Setup.** {study} This run has the same setup."]
    return [
        f"**Setup differs from the study.** {study} This run differs in: {'; '.join(diffs)}. "
        "Numbers below are this run's; they test whether the study's claims carry over to this "
        "setup, not whether the study measured them correctly."
    ]


def training_lines(tree: xr.DataTree) -> list[str]:
    """Final loss and accuracy, the spikes found, and transitions that coincide with one."""
    if "training" not in tree.children:
        return ["- No training scalars in this analysis."]
    tr = node(tree, "training")
    out = []
    if "loss" in tr and tr.sizes["step"]:
        tail = max(1, tr.sizes["step"] // 20)
        loss = finite(np.median, tr["loss"].values[-tail:])
        acc = tr["test_accuracy"].values if "test_accuracy" in tr else np.zeros(0)
        acc = acc[np.isfinite(acc)]
        line = f"- Final training loss (median of the last 5 %): {num(loss, '{:.3g}')}"
        if acc.size:
            line += f"; held-out accuracy {acc[-1]:.3f} (best {acc.max():.3f})"
            if acc[-1] < 0.9 and np.isfinite(loss) and loss < 0.1:
                line += ": the training loss is near zero while held-out accuracy is not, so "
                line += "the network memorises part of its training set"
        out.append(line + ".")
    targets = [str(t) for t in tr["target"].values] if "target" in tr.coords else []
    for target in targets:
        s = tr.sel(target=target)
        spikes = [
            (a, b, r)
            for a, b, r in zip(
                s.spike_start.values, s.spike_end.values, s.spike_ratio.values, strict=True
            )
            if np.isfinite(a)
        ]
        label = target.replace("_", " ")
        if not spikes:
            out.append(f"- No {label} spike (threshold: {tr.attrs.get('threshold')} robust SDs).")
            continue
        shown = ", ".join(f"{a:,.0f}-{b:,.0f} (x{r:.1f})" for a, b, r in sorted(spikes)[:8])
        out.append(f"- {len(spikes)} {label} spike(s) at steps {shown}.")
    out += accuracy_lines(tree, tr)
    out += episode_context_lines(tree)
    out += coincidence_lines(tree)
    return out


def accuracy_lines(tree: xr.DataTree, tr: xr.Dataset) -> list[str]:
    """When held-out accuracy rose (t50, t90) and the notable episodes inside that window."""
    if "accuracy_t50" not in tr:
        return []
    t50, t90 = float(tr["accuracy_t50"]), float(tr["accuracy_t90"])
    first, top = float(tr["accuracy_start"]), float(tr["accuracy_max"])
    if not np.isfinite(t50):
        if not np.isfinite(first):
            return []
        return [f"- Held-out accuracy does not rise ({first:.3f} -> best {top:.3f})."]
    line = (
        f"- Held-out accuracy rises from {first:.3f} to {top:.3f}: half of the rise by step "
        f"{t50:,.0f} (t50), 90 % by step {t90:,.0f} (t90)"
    )
    cl = claims_of(tree)
    if "episode_step" not in cl:
        return [line + "."]
    every = tree.attrs.get("run_every")
    margin = float(every) if isinstance(every, int | float) else 0.0
    start, end = cl["episode_start"].values, cl["episode_end"].values
    inside = (start <= t90 + margin) & (end >= t50 - margin)
    spaces = cl["episode_space"].values[inside]
    if not inside.any():
        return [line + "; no notable episode falls inside that window."]
    listed = ", ".join(
        f"{a:,.0f}-{b:,.0f} ({k})"
        for a, b, k in zip(start[inside], end[inside], spaces, strict=True)
    )
    return [line + f"; {int(inside.sum())} notable episode(s) inside that window: {listed}."]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def episode_context_lines(tree: xr.DataTree) -> list[str]:
    """How many notable episodes per space coincide with each training-context label."""
    cl = claims_of(tree)
    if "episode_context" not in cl:
        return []
    out = []
    for kind in ("activation", "weight"):
        mine = cl["episode_space"].values == kind
        if not mine.any():
            continue
        labels = [str(x) for x in cl["episode_context"].values[mine]]
        tally = {k: labels.count(k) for k in dict.fromkeys(labels) if k}
        quiet = labels.count("")
        said = "; ".join(f"{v} during {_article(k)} {k}" for k, v in tally.items())
        out.append(
            f"- {int(mine.sum())} notable {kind} episode(s): "
            + (f"{said}; " if said else "")
            + f"{quiet} in quiet training."
        )
    return out


def formation_lines(tree: xr.DataTree) -> list[str]:
    """Per layer: decodability at the start and end, and its formation steps."""
    if "formation" not in tree.children:
        return ["- Not computed (the probe has no targets)."]
    form = node(tree, "formation")
    out = []
    for layer in form["layer"].values:
        dec = form["decodability"].sel(layer=layer).values
        dec = dec[np.isfinite(dec)]
        times = form["formation_step"].sel(layer=layer).values
        steps = ", ".join(
            f"{float(f):.0%} at step {num(float(t))}"
            for f, t in zip(form["fraction"].values, times, strict=True)
        )
        head = f"{dec[0]:.2f} -> {dec[-1]:.2f}" if dec.size else "n/a"
        out.append(f"- {layer}: probe decodability {head}; formation {steps}.")
    chance = float(form["chance"]) if "chance" in form else np.nan
    out.append(
        f"- Chance (majority-class share) {num(chance, '{:.2f}')}; a layer whose decodability "
        "gains too little has no formation step (n/a). Figure: `formation`."
    )
    below = below_chance(form)
    if below:
        attrs = form["chance"].attrs
        classes, n = int(attrs["classes"]), int(attrs["probe_examples"])
        said = ", ".join(f"{layer} ({acc:.2f}, p = {p:.1g})" for layer, acc, p in below)
        out.append(
            f"- Below a uniform guess among the {classes} classes ({1 / classes:.3f}) at the "
            f"last step: {said}; one-sided binomial test of the held-out hits among the {n} "
            f"probe examples against 1/{classes}, p < {BELOW_CHANCE_ALPHA}. A readout of these "
            "layers does worse than guessing on held-out examples: it generalises a pattern "
            "that the held-out examples break (for example, the labels of training examples "
            "that share an input with them)."
        )
    return out


BELOW_CHANCE_ALPHA = 0.05


def below_chance(form: xr.Dataset) -> list[tuple[str, float, float]]:
    """(layer, last decodability, p) of layers decoded significantly below a uniform guess.

    A uniform guess among the probe's ``classes`` hits ``1 / classes`` of the examples on
    average, whatever the label shares. Every one of the ``n`` probe examples is held out once,
    so a layer's last finite decodability (the mean of the folds' accuracies, folds within one
    example of equal size) is about ``k / n`` held-out hits, ``k`` its rounding; ``p`` is the
    one-sided binomial probability of at most ``k`` hits at the guess's rate. Empty for
    analyses without the probe size and class count (older than this report).
    """
    from scipy.stats import binomtest

    attrs = form["chance"].attrs if "chance" in form else {}
    n, classes = attrs.get("probe_examples"), attrs.get("classes")
    if not isinstance(n, int | np.integer) or not isinstance(classes, int | np.integer):
        return []
    if n < 1 or classes < 2:
        return []
    out = []
    for layer in form["layer"].values:
        dec = form["decodability"].sel(layer=layer).values
        dec = dec[np.isfinite(dec)]
        if dec.size == 0 or dec[-1] >= 1 / classes:
            continue
        k = round(float(dec[-1]) * int(n))
        p = float(binomtest(k, int(n), 1 / classes, alternative="less").pvalue)
        if p < BELOW_CHANCE_ALPHA:
            out.append((str(layer), float(dec[-1]), p))
    return out


def coincidence_lines(tree: xr.DataTree) -> list[str]:
    """Significant transitions of the study's z-score rule that fall inside a loss or gradient
    spike (its few significant events are the ones a reader would otherwise take for the
    study's claim); the headline detector's events are described as episodes above."""
    if "training" not in tree.children:
        return []
    tr = node(tree, "training")
    _, detector = headline(tree)
    every = tree.attrs.get("run_every")
    margin = float(every) if isinstance(every, int | float) else 0.0
    out = []
    for name in [n for n in ("zscore",) if n != detector]:
        for kind in ("activation", "weight"):
            steps = significant_steps(tree, name, kind)
            labelled = [(s, spike_at(tr, s, margin=margin)) for s in steps]
            hits = [(s, t) for s, t in labelled if t is not None]
            if steps.size:
                listed = ", ".join(f"{s:,.0f} ({t.replace('_', ' ')} spike)" for s, t in hits[:8])
                rule = f"{name}, the study's rule" if name == "zscore" else name
                out.append(
                    f"- {len(hits)} of {steps.size} steps with a significant {kind} transition "
                    f"({rule}, any layer or metric) coincide with a training spike"
                    + (f": {listed}." if hits else "; none is explained by one.")
                )
    return out


def twonn_line(tree: xr.DataTree) -> str:
    """TwoNN intrinsic dimension at the first and last estimate, per activation layer."""
    dim = node(tree, "dimensionality")
    if "twonn" not in dim:
        return "TwoNN: not computed (twonn_stride 0)."
    cells = []
    for layer in layers(tree, "activation"):
        y = dim["twonn"].sel(layer=layer).values
        y = y[np.isfinite(y)]
        if y.size:
            cells.append(f"{layer} {y[0]:.1f} -> {y[-1]:.1f}")
    return "TwoNN intrinsic dimension of activations (first -> last): " + (
        "; ".join(cells) or "n/a"
    )


def _step_list(steps: list[int], limit: int = 12) -> str:
    head = ", ".join(str(int(s)) for s in steps[:limit])
    more = f" and {len(steps) - limit} more" if len(steps) > limit else ""
    return f"step{'s' if len(steps) > 1 else ''} {head}{more}"


def health_lines(tree: xr.DataTree) -> list[str]:
    """Markdown bullets: arrays holding NaN/Inf, and the steps the analysis left out."""
    nonfinite = _attr_json(tree, "nonfinite")
    excluded = _attr_json(tree, "excluded")
    if not nonfinite and not excluded:
        return ["- The run holds no NaN or Inf values; no step was excluded."]
    out = []
    for name, steps in sorted(nonfinite.items()):
        out.append(f"- Non-finite values in {name}: {_step_list(list(steps))}.")
    for series, steps in sorted(excluded.items()):
        kind, _, layer = series.partition("/")
        out.append(
            f"- Excluded from every job (NaN spectrum): {kind} {layer}: {_step_list(list(steps))}."
        )
    if nonfinite and not excluded:
        out.append("- No step was excluded: no non-finite value reached a spectrum.")
    return out
