"""launcher: slurm (causalrep/slurm.py through submitit) and the sweep schema's errors on the command line: the sbatch
array a sweep's slurm: settings make, the submission loop's stage order and failures, the missing-submitit error,
and (slow) real sweeps whose runs are jobs of submitit's LocalExecutor: resumable, failures listed, stages waiting."""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import submitit
import torch
from submitit.core.utils import DelayedSubmission
import yaml

from causalrep import slurm
from causalrep import sweep as sw
from causalrep.spec.convert import from_dict
from causalrep.spec.sweep import SlurmSpec, SweepSpec
from causalrep.train import load_checkpoint

from conftest import tiny_data


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def tiny_base(tmp_path):
    return write(tmp_path / "ae.yaml", {**tiny_data("ae"), "name": "ae"})


LOCAL = {"cluster": "local", "gpus_per_task": 0, "cpus_per_task": 1, "array_parallelism": 2, "time_min": 10}


# ------------------------------------------------------------------------------------- errors on the CLI
def test_sweep_schema_error_names_file_and_key_path_and_exits_2(tmp_path, tiny_base, capsys):
    f = write(tmp_path / "s.yaml", {"name": "s", "base": "ae.yaml", "models": {"a": {}}, "seeds": [0, 1, "a"]})
    assert sw.main([str(f), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {f}: seeds[2]: expected int, got 'a'"
    f = write(tmp_path / "t.yaml", {"name": "t", "base": "ae.yaml", "models": {"a": {}}, "launcher": "slurm",
                                    "slurm": {"time_min": 0}})
    assert sw.main([str(f), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {f}: slurm.time_min: expected an int in [1, 525600], got 0"
    assert not (tmp_path / "out").exists()


def test_launcher_slurm_without_submitit_says_pip_install(tmp_path, tiny_base, capsys, monkeypatch):
    f = write(tmp_path / "s.yaml", {"name": "s", "base": "ae.yaml", "models": {"a": {}}, "launcher": "slurm"})
    monkeypatch.setattr(slurm, "submitit", None)  # as without the package: the guarded import leaves None
    out = tmp_path / "out"
    assert sw.main([str(f), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {f}: launcher: slurm needs the submitit package, which "
                                               "is not installed: pip install submitit (or pip install "
                                               "'causalrep[slurm]')")
    assert not out.exists()  # nothing was made
    assert sw.main([str(f), "--out", str(out), "--dry-run"]) == 0  # listing the runs needs no submitit
    assert "a/s0  new" in capsys.readouterr().out
    # --launcher slurm on a local sweep: the same error
    g = write(tmp_path / "g.yaml", {"name": "g", "base": "ae.yaml", "models": {"a": {}}})
    assert sw.main([str(g), "--out", str(out), "--launcher", "slurm"]) == 2
    assert "pip install submitit" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the sbatch array itself
def fake_cluster(tmp_path: Path, monkeypatch) -> Path:
    """`srun` and `sbatch` on PATH: sbatch keeps a copy of each submission file and answers as Slurm does
    ("Submitted batch job N"), so submitit's SlurmExecutor submits for real without a cluster."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "sbatch_files"
    bin_dir.mkdir()
    kept.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nn=$(ls {kept} | wc -l)\ncp "$1" {kept}/$n.sh\n'
                                    f'echo "Submitted batch job $((4242 + n))"\n')
    for name in ("srun", "sbatch"):
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return kept


def test_slurm_settings_make_one_sbatch_array_with_them(tmp_path, monkeypatch):
    kept = fake_cluster(tmp_path, monkeypatch)
    settings = SlurmSpec(partition="gpu", gpus_per_task=2, cpus_per_task=8, mem="64G", time_min=720,
                         array_parallelism=2, sbatch={"account": "proj42", "exclusive": True},
                         setup=("module load cuda/12.4",))
    executor = slurm.make_executor(settings, tmp_path / "logs", name="demo", where="x.yaml", pythonpath="/opt/my code")
    jobs = executor.map_array(slurm.Requeueable(sw.execute_run), [1, 2, 3], [4, 5, 6], [7, 8, 9])
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]  # one sbatch call: a 3-task array
    (text,) = [p.read_text() for p in sorted(kept.iterdir())]
    lines = text.splitlines()
    for flag in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=64G", "--time=720",
                 "--array=0-2%2", "--account=proj42", "--nodes=1", "--ntasks-per-node=1", "--job-name=demo"):
        assert f"#SBATCH {flag}" in lines, flag
    assert "#SBATCH --exclusive" in lines  # a `true` option is the bare flag
    setup = lines[lines.index("# setup") + 1:lines.index("# setup") + 3]
    assert setup == ["module load cuda/12.4", "export PYTHONPATH='/opt/my code'${PYTHONPATH:+:$PYTHONPATH}"]
    # each task's pickle is the call execute_run(*args) (the job callable: requeued on timeout, helpers.Checkpointable)
    delayed = DelayedSubmission.load(jobs[1].paths.submitted_pickle)
    assert isinstance(delayed.function, slurm.Requeueable) and delayed.function.fn is sw.execute_run
    assert delayed.args == (2, 5, 8)
    assert delayed.function.checkpoint(*delayed.args).args == (2, 5, 8)  # what a requeued job runs: the same call


def test_parallelism_defaults():
    assert slurm.parallelism(SlurmSpec()) == 256  # submitit's own array default on Slurm
    assert slurm.parallelism(SlurmSpec(array_parallelism=5)) == 5
    assert slurm.parallelism(SlurmSpec(cluster="local", cpus_per_task=1)) == os.cpu_count()
    assert slurm.parallelism(SlurmSpec(cluster="local", cpus_per_task=1024)) == 1


# ------------------------------------------------------------------------------- the submission loop
CALLS: list[str] = []


def record(key: str, fail: bool) -> str | None:
    """A job function as execute_run is one: None when it succeeded, else its error on one line."""
    CALLS.append(key)
    return f"{key} broke" if fail else None


def test_run_tasks_submits_a_later_stage_after_its_earlier_one_and_skips_it_after_a_failure(tmp_path):
    """Through submitit's DebugExecutor (each job runs in this process when its state is asked): the first
    stages go together as one map_array, a second stage only once its own first stage has ended well, a
    failed first stage's second stage is never submitted, and the limit caps the jobs not yet ended."""
    CALLS.clear()
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="debug")
    tasks = [slurm.Task("a-pre", ("a-pre", False)), slurm.Task("a-dec", ("a-dec", False), after="a-pre"),
             slurm.Task("b-pre", ("b-pre", True)), slurm.Task("b-dec", ("b-dec", False), after="b-pre"),
             slurm.Task("c-dec", ("c-dec", False), after="c-pre")]  # c-pre is not in this submission: no wait
    events: list[str] = []
    outcome = slurm.run_tasks(executor, record, tasks, limit=2, poll_s=0.0,
                              on_submit=lambda t, job: events.append(f"submit {t.key}"),
                              on_end=lambda t, error: events.append(f"end {t.key}: {error}"))
    assert outcome == {"a-pre": None, "b-pre": "b-pre broke", "a-dec": None, "b-dec": "not run: b-pre failed",
                       "c-dec": None}
    assert events == ["submit a-pre", "submit b-pre",  # the limit: two at once, in the plan's order
                      "end a-pre: None", "end b-pre: b-pre broke", "end b-dec: not run: b-pre failed",
                      "submit a-dec", "submit c-dec", "end a-dec: None", "end c-dec: None"]
    assert CALLS == ["a-pre", "b-pre", "a-dec", "c-dec"]


# ------------------------------------------------------------------------- real jobs: LocalExecutor
def submitted_jobs(folder: Path) -> set[str]:
    return {p.name.split("_")[0] for p in folder.glob("*_submitted.pkl")}


@pytest.mark.slow
def test_slurm_local_sweep_runs_each_run_as_a_job_reruns_nothing_and_lists_a_failure(tmp_path, tiny_base, capsys):
    """2 model variants x 2 seeds, each run a process of submitit's LocalExecutor, two at a time; run again,
    nothing is submitted and no file of a finished run changes; a run whose spec makes it raise is listed with
    its error and the sweep exits 1, the finished runs untouched."""
    sweep = {"name": "sl", "base": "ae.yaml", "models": {"a": {}, "b": {"model": {"latent_dim": 6}}}, "seeds": [0, 1],
             "overrides": {"train.threads": 1}, "launcher": "slurm", "slurm": LOCAL}
    f = write(tmp_path / "sl.yaml", sweep)
    out = tmp_path / "out"
    args = [str(f), "--out", str(out), "--no-progress"]
    assert sw.main(args) == 0
    printed = capsys.readouterr().out
    labels = ["a/s0", "a/s1", "b/s0", "b/s1"]
    jobs = submitted_jobs(out / ".submitit")
    assert len(jobs) == 4 and all(f"[{lb}] submitted: job " in printed for lb in labels)
    for lb in labels:  # each job wrote an ordinary, finished run folder
        run = out / lb
        m = json.loads((run / "metrics.json").read_text())
        assert m["step"] == 4 and json.loads((run / "sweep.json").read_text())["sweep"] == "sl"
        assert yaml.safe_load((run / "spec.yaml").read_text())["model"]["latent_dim"] == (6 if lb[0] == "b" else 4)
    logs = [(out / ".submitit" / f"{j}_0_log.out").read_text() for j in jobs]  # each job's own process and log
    assert [log.count("Job completed successfully") for log in logs] == [1, 1, 1, 1]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/s*/**/*") if p.is_file()}

    assert sw.main(args) == 0  # again: every run finished, nothing submitted, nothing rewritten
    assert "nothing to submit: every run is finished" in capsys.readouterr().out
    assert submitted_jobs(out / ".submitit") == jobs
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/s*/**/*") if p.is_file()} == stamps

    sweep["models"]["bad"] = {"train": {"init_from": str(tmp_path / "nowhere")}}  # raises when the run starts
    write(f, sweep)
    assert sw.main([*args, "--only", "bad/s0"]) == 1
    captured = capsys.readouterr()
    assert len(submitted_jobs(out / ".submitit")) == 5  # the one new run only
    log = out / "bad" / "s0" / "error.log"
    assert f"  bad/s0: train.init_from: no checkpoint at {tmp_path / 'nowhere'}" in captured.err
    assert captured.err.startswith("error: 1 of 1 runs failed; running the sweep again retries them")
    assert f"(traceback in {log})" in captured.err and "Traceback" in log.read_text()
    assert "[bad/s0] failed: train.init_from: no checkpoint" in captured.out
    assert {p: p.stat().st_mtime_ns for p in out.glob("[ab]/s*/**/*") if p.is_file()} == stamps


@pytest.mark.slow
def test_slurm_local_later_stage_waits_for_its_earlier_stage(tmp_path, tiny_base, capsys):
    """Two stages, each a LocalExecutor job: the decoder-only stage starts from the first stage's weights, so it
    ran after that job ended (its encoder is bit-equal to the first stage's checkpoint)."""
    f = write(tmp_path / "st.yaml", {"name": "st", "specs": ["ae.yaml"], "seeds": [0],
                                     "overrides": {"train.threads": 1},
                                     "stages": [{"name": "pre", "overrides": {"data.exclude": {"shape": ["heart"]}}},
                                                {"name": "dec", "overrides": {"train.init_from": "@pre",
                                                                              "train.trainable": "decoder"}}],
                                     "launcher": "slurm", "slurm": LOCAL})
    out = tmp_path / "out"
    assert sw.main([str(f), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out.splitlines()
    order = [ln.split(": job")[0] for ln in printed if ln.startswith("[ae-")]
    assert order == ["[ae-pre/s0] submitted", "[ae-pre/s0] done", "[ae-dec/s0] submitted", "[ae-dec/s0] done"]
    a, b = (load_checkpoint(out / f"ae-{s}" / "s0" / "checkpoints" / "last.pt")["model"] for s in ("pre", "dec"))
    assert all(torch.equal(a[k], b[k]) == k.startswith("encoder.") for k in a if not k.startswith("latent_bank"))


def test_the_sweep_files_in_docs_sweeps_md_fit_the_schema():
    """Every YAML block of docs/sweeps.md that is a sweep file (has a name) converts to a SweepSpec; the Slurm
    section's example carries the settings its comments describe."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "sweeps.md").read_text()
    sweeps = []
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "name" in data:
            sweeps.append(from_dict(SweepSpec, {k: v for k, v in data.items() if not k.startswith("x-")}))
    assert len(sweeps) == 2
    s = sweeps[1].slurm
    assert (sweeps[1].launcher, s.partition, s.gpus_per_task, s.mem, s.time_min, s.array_parallelism) == \
        ("slurm", "gpu", 1, "64G", 720, 12)
