"""AimTracker writes a run that Aim's own SDK reads back exactly; causalrep.track.base never needs aim."""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

PARAMS = {"model": {"name": "betavae", "latent_dim": 10, "beta": 4.0}, "seed": 0,
          "tags": ["a", "b"], "note": None, "use_amp": True}
TRAIN_LOSS = [1.5, 0.75, 0.5, 0.375, 0.25]


def _index(repo_path):
    """Aim >=3.2x only makes a run visible to Repo queries once it is indexed into .aim/meta/index;
    `aim up` does that in a background thread, here we call the same RepoIndexManager.index."""
    import aim
    from aim.sdk.index_manager import RepoIndexManager

    repo = aim.Repo.from_path(str(repo_path))
    mng = RepoIndexManager.get_index_manager(repo)
    for run_hash in repo.list_all_runs():
        mng.index(run_hash)
    return repo


def test_aim_roundtrip(tmp_path):
    aim = pytest.importorskip("aim")
    from aim.sdk.types import QueryReportMode
    from aim.storage.context import Context

    from causalrep.track.aim import AimTracker

    repo_dir = tmp_path / "aimrepo"  # does not exist yet: the tracker must create it
    img = torch.linspace(0, 1, 3 * 4 * 5).reshape(3, 4, 5)
    tr = AimTracker(repo=repo_dir, experiment="unit-exp", run_name="unit-run")
    tr.log_params(PARAMS)
    for step, v in enumerate(TRAIN_LOSS):
        tr.log_metric("loss", v, step=step)  # default context "train"
    tr.log_metric("loss", 0.625, step=4, context="val")
    tr.log_image("recon", img, step=3)
    tr.close()
    tr.close()  # idempotent
    assert (repo_dir / ".aim").is_dir()

    repo = _index(repo_dir)
    runs = list(repo.iter_runs())
    assert [r.hash for r in runs] == [tr.run_hash]
    run = runs[0]
    assert run.experiment == "unit-exp" and run.name == "unit-run"
    assert run["hparams"] == PARAMS
    assert not run.active  # close() wrote end_time

    # Sequence.data.items_list() -> (steps, [values, epochs, timestamps]) in step order
    # (Sequence.values is ordered by step hash, not by step).
    steps, (values, *_rest) = run.get_metric("loss", Context({"subset": "train"})).data.items_list()
    assert steps == [0, 1, 2, 3, 4] and values == TRAIN_LOSS
    steps, (values, *_rest) = run.get_metric("loss", Context({"subset": "val"})).data.items_list()
    assert steps == [4] and values == [0.625]

    # The same through the query language used by the UI.
    got = {m.context.to_dict()["subset"]: m.data.items_list()[0]
           for m in repo.query_metrics('metric.name == "loss"', report_mode=QueryReportMode.DISABLED).iter()}
    assert got == {"train": [0, 1, 2, 3, 4], "val": [4]}

    steps, (images, *_rest) = run.get_image_sequence("recon", Context({"subset": "eval"})).data.items_list()
    assert steps == [3] and len(images) == 1
    pixels = np.asarray(images[0].to_pil_image())
    expected = img.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert pixels.shape == (4, 5, 3) and np.array_equal(pixels, expected)


def test_aim_grey_image_and_two_runs(tmp_path):
    pytest.importorskip("aim")
    from causalrep.track.aim import AimTracker

    hashes = []
    for i in range(2):
        tr = AimTracker(repo=tmp_path, experiment="e")
        tr.log_image("grid", torch.rand(1, 6, 7), step=i)
        tr.close()
        hashes.append(tr.run_hash)
    assert len(set(hashes)) == 2
    assert sorted(_index(tmp_path).list_all_runs()) == sorted(hashes)


def test_aim_repo_is_a_file_raises_runtimeerror(tmp_path):
    pytest.importorskip("aim")
    from causalrep.track.aim import AimTracker

    bad = tmp_path / "not_a_dir"
    bad.write_text("I am a file")
    with pytest.raises(RuntimeError, match="not_a_dir") as info:
        AimTracker(repo=bad, experiment="e")
    assert type(info.value) is RuntimeError
    assert bad.read_text() == "I am a file"


def test_base_tracker_does_not_need_aim(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "aim", None)  # `import aim` now raises ImportError
    for mod in [m for m in sys.modules if m == "causalrep" or m.startswith("causalrep.")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(ImportError):
        import aim  # noqa: F401

    base = importlib.import_module("causalrep.track.base")
    tr = base.MultiTracker([base.JsonlTracker(tmp_path)])
    tr.log_params({"a": 1})
    tr.log_metric("loss", 0.5, step=0)
    tr.close()
    assert base.read_jsonl(tmp_path / "metrics.jsonl") == [
        {"name": "loss", "value": 0.5, "step": 0, "context": "train"}]

    # and the Aim backend turns the missing package into the RuntimeError the trainer expects
    aim_mod = importlib.import_module("causalrep.track.aim")
    with pytest.raises(RuntimeError, match="aim is not installed"):
        aim_mod.AimTracker(repo=tmp_path / "r", experiment="e")


@pytest.mark.slow
def test_aim_up_lists_a_finished_run(tmp_path):
    """A run trained through the CLI shows up in `aim up` (tools/check_aim_up.py asks its web API)."""
    pytest.importorskip("aim")
    import subprocess
    from pathlib import Path

    import yaml

    from causalrep.run import main
    from conftest import tiny_data

    data = tiny_data("sae")
    data["track"] = {"kind": "aim"}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    assert main([str(spec), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    tool = Path(__file__).resolve().parents[2] / "tools" / "check_aim_up.py"
    res = subprocess.run([sys.executable, str(tool), "--repo", str(tmp_path / "runs")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert '"runs_listed": 1' in res.stdout.splitlines()[-1]


def test_run_goes_on_when_aim_cannot_open_its_repo(tmp_path):
    """An unusable Aim repo gives one warning; the run finishes and its metrics land in metrics.jsonl."""
    pytest.importorskip("aim")
    from causalrep.experiment import Experiment
    from causalrep.track.base import read_jsonl
    from conftest import tiny_spec

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the Aim repo should be")
    spec = tiny_spec("sae", overrides=["track.kind=aim", f"track.repo={blocker}"])
    exp = Experiment(spec, out=tmp_path / "runs", progress=False)
    with pytest.warns(UserWarning, match="Aim tracking is off") as record:
        metrics = exp.run()
    assert len([w for w in record if "Aim" in str(w.message)]) == 1
    assert metrics["val_recon_error"] > 0
    names = {r["name"] for r in read_jsonl(exp.run_dir / "metrics.jsonl")}
    assert {"loss", "recon_error", "val_recon_error"} <= names
