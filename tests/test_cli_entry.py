"""The `causalrep` command (causalrep/cli.py): the console script's target, python -m causalrep, each subcommand's
--help, and run / report / check / table / sweep through it (report rewrites a finished run's files exactly)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import runpy
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from causalrep import cli
from causalrep import run as run_module
from causalrep.cli import COMMANDS, main

from conftest import tiny_data

ROOT = Path(__file__).resolve().parents[1]


def test_console_script_points_at_cli_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"causalrep": "causalrep.cli:main"}
    ep = importlib.metadata.EntryPoint(name="causalrep", value=scripts["causalrep"], group="console_scripts")
    assert ep.load() is cli.main


@pytest.mark.slow  # a fresh interpreter imports torch: ~10 s on these 2 cores
def test_python_m_causalrep_help_lists_each_command_on_one_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    res = subprocess.run([sys.executable, "-m", "causalrep", "--help"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "usage: causalrep [-h] COMMAND ..."
    for name, (line, _) in COMMANDS.items():
        assert f"    {name:<10}{line}" in lines, (name, res.stdout)
    assert list(COMMANDS) == ["run", "sweep", "table", "report", "check", "data"]


def test_python_m_causalrep_runs_cli_main(monkeypatch, capsys):
    """causalrep/__main__.py, run in this process as `python -m causalrep --help` runs it."""
    monkeypatch.setattr(sys, "argv", ["causalrep", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("causalrep", run_name="__main__")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: causalrep [-h] COMMAND ...") and all(f"    {n} " in out for n in COMMANDS)


@pytest.mark.parametrize("argv, usage", [
    (["run"], "usage: causalrep run SPEC [--set KEY=VALUE ...] [--check] [options]"),
    (["sweep"], "usage: causalrep sweep [-h] [--out OUT]"),
    (["table"], "usage: causalrep table [-h] [--metrics METRICS]"),
    (["report"], "usage: causalrep report [-h] [--device {cpu,cuda}] [--no-baseline] RUN"),
    (["check"], "usage: causalrep check [-h] [--set KEY=VALUE] spec"),
    (["data"], "usage: causalrep data [-h] ACTION ..."),
    (["data", "get"], "usage: causalrep data get [-h] [--variant VARIANT] [--dest DIR]"),
])
def test_each_command_has_its_own_help(argv, usage, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_no_or_unknown_command_is_a_usage_error(capsys):
    for argv in ([], ["train"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_python_m_causalrep_run_keeps_its_name(capsys):
    with pytest.raises(SystemExit):
        run_module.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m causalrep.run SPEC")


def test_check_is_run_check(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_data("sae")))
    assert run_module.main(["--check", str(spec), "--set", "train.steps=7"]) == 0
    expected = capsys.readouterr().out
    assert main(["check", str(spec), "--set", "train.steps=7"]) == 0
    out = capsys.readouterr().out
    assert out == expected and out.startswith(f"ok: {spec} (sae, ")
    assert main(["check", str(spec), "--set", "model.decoder.blocks=twelve"]) == 2
    assert capsys.readouterr().err == "error: model.decoder.blocks: expected int, got 'twelve'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run trained through `causalrep run` (2 steps on the CPU)."""
    tmp = tmp_path_factory.mktemp("cli")
    spec = tmp / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_data("sae", 4, {"kind": "chain", "nodes": 4})))
    assert main(["run", str(spec), "--set", "train.steps=2", "--out", str(tmp / "runs"), "--device", "cpu",
                 "--no-progress"]) == 0
    (run_dir,) = (tmp / "runs" / "tiny").iterdir()
    return run_dir


def test_report_rewrites_a_finished_runs_files_from_metrics_json_without_training(finished_run, capsys):
    d = finished_run
    written = {p.name: p.read_bytes() for p in d.iterdir() if p.suffix == ".png" or p.name in ("report.md",
                                                                                                 "metrics.json")}
    pngs = sorted(n for n in written if n.endswith(".png"))
    assert {"reconstructions.png", "traversals.png", "traversal_u4.png", "samples_hybrid.png"} <= set(pngs)
    untouched = {p: p.read_bytes() for p in [d / "metrics.jsonl", d / "hparams.json", *(d / "checkpoints").iterdir()]}
    for name in [*pngs, "report.md"]:
        (d / name).unlink()
    # a value only metrics.json has: evaluating the model again could not give it
    metrics = json.loads(written["metrics.json"])
    (d / "metrics.json").write_text(json.dumps({**metrics, "val_recon_error": 0.123456789}))
    assert main(["report", str(d)]) == 0
    assert capsys.readouterr().out == f"wrote {d / 'report.md'} ({len(pngs)} figures) and metrics.json\n"
    assert {n: (d / n).read_bytes() for n in pngs} == {n: written[n] for n in pngs}  # byte for byte
    row = f"| val_recon_error | {metrics['val_recon_error']:.6g} |"
    old = written["report.md"].decode()
    assert row in old.splitlines()
    assert (d / "report.md").read_text() == old.replace(row, "| val_recon_error | 0.123457 |")
    assert json.loads((d / "metrics.json").read_text()) == {**metrics, "val_recon_error": 0.123456789}
    assert all(p.read_bytes() == b for p, b in untouched.items())  # no checkpoint or training log written


def test_report_of_an_unfinished_folder_exits_2(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text("name: x\n")
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: report: {tmp_path} is not a finished run folder (no metrics.json); an "
                                       f"interrupted run is finished by: causalrep run --resume {tmp_path}\n")


def test_table_through_the_command(finished_run, tmp_path, capsys):
    assert main(["table", str(finished_run.parent), "--metrics", "val_recon_error", "--out", str(tmp_path)]) == 0
    value = json.loads((finished_run / "metrics.json").read_text())["val_recon_error"]
    table = (tmp_path / "table.md").read_text()
    assert f"{value:.3f}" in table and "tiny" in table


def test_sweep_dry_run_through_the_command(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["sweep", str(ROOT / "specs" / "sweeps" / "smoke.yaml"), "--dry-run", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"sweep smoke: 4 runs -> {out}")
    assert not out.exists()  # a dry run trains nothing
