"""CLI validation: unknown names, bad numbers, existing runs, lazily imported commands."""

import subprocess
import sys
from pathlib import Path

import pytest

from dimlapse.pipelines.cli import COMMANDS, build_parser, main


def _err(capsys, argv):
    status = main(argv)
    return status, capsys.readouterr().err


def test_unknown_model_lists_valid_ones(capsys, tmp_path):
    status, err = _err(capsys, ["capture", "--model", "gpt5", "--out-dir", str(tmp_path)])
    assert status == 2
    assert "Unknown model 'gpt5'; expected one of: mlp, cnn, resnet, transformer, vit" in err


def test_unknown_data_lists_valid_ones(capsys, tmp_path):
    status, err = _err(capsys, ["capture", "--data", "imagenet", "--out-dir", str(tmp_path)])
    assert status == 2
    assert (
        "Unknown data 'imagenet'; expected one of: mnist1d, digits, modadd, mnist, cifar10" in err
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "Expected `steps` to be a positive int, got 0"),
        (["--steps", "-20"], "Expected `steps` to be a positive int, got -20"),
        (["--every", "0"], "Expected `every` to be a positive int, got 0"),
        (["--codec", "gzip"], "Expected `codec` to be one of"),
        (["--run", "../x"], "Expected `run` to be a name"),
        (["--threads", "0"], "Expected `--threads` to be a positive int, got 0"),
        (["--device", "tpu9"], "Expected `device` to be 'auto', 'cpu' or 'cuda[:n]', got 'tpu9'"),
    ],
)
def test_bad_values_are_one_line_errors(capsys, tmp_path, extra, message):
    status, err = _err(capsys, ["capture", "--out-dir", str(tmp_path), *extra])
    assert status == 2
    assert message in err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_non_integer_steps_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["capture", "--steps", "ten"])
    assert exc.value.code == 2
    assert "invalid int value: 'ten'" in capsys.readouterr().err


def test_overwrite_and_resume_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        main(["capture", "--overwrite", "--resume"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_existing_run_is_refused_with_both_remedies(capsys, tmp_path):
    (tmp_path / "mlp-mnist1d-s0.zarr").mkdir()
    status, err = _err(capsys, ["capture", "--out-dir", str(tmp_path)])
    assert status == 2
    assert "mlp-mnist1d-s0.zarr already exists" in err
    assert "--overwrite" in err and "--resume" in err


def test_resume_needs_an_existing_run(capsys, tmp_path):
    status, err = _err(capsys, ["capture", "--resume", "--run", "x", "--out-dir", str(tmp_path)])
    assert status == 2 and "Cannot --resume: no run store at" in err


def test_replay_without_runs_and_with_missing_run(capsys, tmp_path):
    status, err = _err(capsys, ["replay", "--out-dir", str(tmp_path)])
    assert status == 2 and f"No runs in {tmp_path}" in err
    status, err = _err(capsys, ["replay", "--run", "nope", "--out-dir", str(tmp_path)])
    assert status == 2 and "No run store at" in err


def test_help_lists_every_command_without_importing_the_analysis_stack():
    code = (
        "import sys\n"
        "from dimlapse.pipelines.cli import COMMANDS, build_parser\n"
        "text = build_parser().format_help()\n"
        "print(all(c in text for c in COMMANDS))\n"
        "heavy = ['xarray', 'dask', 'dimlapse.analyze', 'dimlapse.pipelines.bench._capture']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["True", "[]"]
    assert set(COMMANDS) >= {"capture", "replay", "analyze", "report", "watch", "study"}
    assert set(COMMANDS) >= {"intervene", "bench"}


def test_every_option_states_its_default():
    import argparse

    from dimlapse.pipelines.cli import HelpFormatter

    for command, (module, add, _, _) in COMMANDS.items():
        parser = build_parser({command: getattr(__import__(module, fromlist=[add]), add)})
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[command]
        parsers = [p]
        for a in p._actions:  # bench's own sub-commands
            if isinstance(a, argparse._SubParsersAction):
                parsers += list(a.choices.values())
        for q in parsers:
            text = q.format_help()
            for action in q._actions:
                if not action.option_strings or action.nargs == 0 or action.required:
                    continue
                shown = HelpFormatter(q.prog)._get_help_string(action) % {"default": action.default}
                assert "default" in shown.lower(), (q.prog, action.option_strings)
            assert "usage:" in text


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("dimlapse", path=str(Path(sys.executable).parent))
    assert exe is not None, "pip install -e . installs the `dimlapse` console script"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    assert "capture" in out.stdout and "analyze" in out.stdout


def test_python_dash_m_entry_point(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dimlapse.pipelines", "capture", "--model", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "Unknown model 'nope'" in out.stderr


def test_analysis_commands_use_only_the_public_analysis_api():
    import ast

    src = Path(__file__).resolve().parents[1] / "dimlapse" / "pipelines" / "cli" / "_analyze.py"
    private = [
        node.module
        for node in ast.walk(ast.parse(src.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dimlapse.analyze.")
    ]
    assert private == []


@pytest.mark.parametrize(
    ("detectors", "message"),
    [
        ("pelt,cusum", "Unknown detector 'cusum' in `--detectors`; expected any of: "),
        (",", "Expected `--detectors` to name at least one of: "),
    ],
)
def test_analyze_detectors_are_checked_against_the_registry(capsys, tmp_path, detectors, message):
    from dimlapse.analyze import ALL_DETECTORS

    argv = ["analyze", "--runs-dir", str(tmp_path), "--detectors", detectors]
    status, err = _err(capsys, argv)
    assert status == 2
    assert message + ", ".join(ALL_DETECTORS) in err
    assert "Traceback" not in err
    status, err = _err(capsys, [*argv[:-1], ",".join(reversed(ALL_DETECTORS))])
    assert status == 2 and f"No runs in {tmp_path}" in err  # known names pass on to the run


def test_analyze_detectors_default_and_help_follow_the_registry(capsys, monkeypatch, tmp_path):
    import dimlapse.analyze
    from dimlapse.pipelines.cli import _analyze

    monkeypatch.setattr(dimlapse.analyze, "ALL_DETECTORS", ("pelt", "binseg"))
    monkeypatch.setattr(dimlapse.analyze, "DEFAULT_DETECTOR", "binseg")
    parser = build_parser({"analyze": _analyze.add_analyze_arguments})
    assert parser.parse_args(["analyze"]).detectors == ["pelt", "binseg"]
    sub = parser.parse_args(["analyze", "--detectors", "binseg"])
    assert sub.detectors == ["binseg"]
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "any of pelt, binseg" in help_text and "lead with binseg" in help_text
    status, err = _err(capsys, ["analyze", "--runs-dir", str(tmp_path), "--detectors", "zscore"])
    assert status == 2 and "expected any of: pelt, binseg" in err


def test_analyze_keeps_earlier_results_unless_overwrite(capsys, tmp_path):
    store = tmp_path / "r.zarr"
    store.mkdir()  # not a run: the analysis would fail at once, after the check
    out = tmp_path / "res"
    (out / "analysis.zarr").mkdir(parents=True)
    (out / "report.md").write_text("earlier")
    argv = ["analyze", "--run", str(store), "--out-dir", str(out), "--no-progress"]
    status, err = _err(capsys, argv)
    assert status == 2
    assert f"{out} already holds results of an earlier analysis (analysis.zarr, report.md)" in err
    assert "--overwrite" in err and "--out-dir" in err
    assert (out / "report.md").read_text() == "earlier"
    status, err = _err(capsys, [*argv, "--overwrite"])  # passes the check, fails on the store
    assert status == 2 and "already holds" not in err


@pytest.mark.slow
def test_analyze_twice_needs_overwrite(capsys, small_run_store, tmp_path):
    out = tmp_path / "res"
    argv = ["analyze", "--run", str(small_run_store), "--out-dir", str(out), "--no-progress"]
    argv += ["--metrics", "stable_rank", "--detectors", "pelt", "--n-boot", "50"]
    assert main(argv) == 0
    stamp = (out / "report.md").stat().st_mtime_ns
    status, err = _err(capsys, argv)
    assert status == 2 and "already holds results" in err
    assert (out / "report.md").stat().st_mtime_ns == stamp
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "report.md").stat().st_mtime_ns != stamp
