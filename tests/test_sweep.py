"""Sweeps and tables: expansion, key-path errors, stages (init_from, trainable), held-out errors, the smoke
sweep end to end with its table equal to the runs' metrics.json, and mean ± std on hand-made runs."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from causalrep import sweep as sw
from causalrep import table as tb
from causalrep.errors import SpecError
from causalrep.spec.sweep import HeldoutSpec
from causalrep.experiment import Experiment
from causalrep.train import load_checkpoint

from conftest import tiny_data, tiny_spec

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "specs" / "sweeps").glob("*.yaml"))


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def tiny_specs(tmp_path):
    """Two tiny spec files (ae, sae) beside a sweep folder."""
    write(tmp_path / "specs" / "ae.yaml", {**tiny_data("ae"), "name": "ae"})
    write(tmp_path / "specs" / "sae.yaml", {**tiny_data("sae"), "name": "sae"})
    return tmp_path / "specs"


# ------------------------------------------------------------------------------------------------ expansion
def test_grid_expands_models_x_grid_x_seeds(tmp_path, tiny_specs):
    f = write(tmp_path / "sweeps" / "g.yaml", {
        "name": "g", "specs": ["../specs/ae.yaml", "../specs/sae.yaml"], "seeds": [0, 3],
        "overrides": {"train.steps": 3}, "grid": {"train.lr": [1.0e-3, 5.0e-4], "model.latent_dim": [4, 8]}})
    s = sw.load_sweep(f, out=tmp_path / "out")
    assert len(s.runs) == 2 * 4 * 2  # models x grid points x seeds
    assert [r.label for r in s.runs[:3]] == ["ae-lr0.001-latent_dim4/s0", "ae-lr0.001-latent_dim4/s3",
                                             "ae-lr0.001-latent_dim8/s0"]
    r = s.runs[-1]
    assert r.run_dir == tmp_path / "out" / "sae-lr0.0005-latent_dim8" / "s3"
    spec = r.spec()
    assert (spec.name, spec.seed, spec.train.steps, spec.train.lr, spec.model.latent_dim) == \
        ("sae-lr0.0005-latent_dim8", 3, 3, 5e-4, 8)
    assert (spec.track.experiment, spec.track.repo) == ("g", str((tmp_path / "out").resolve()))


def test_base_and_models_and_the_specs_own_seed(tmp_path, tiny_specs):
    f = write(tmp_path / "m.yaml", {"name": "m", "base": "specs/ae.yaml",
                                    "models": {"small": {}, "vae": {"model": {"kind": "vae", "latent_dim": 4, "beta": 4.0}}},
                                    "overrides": {"seed": 7}})
    s = sw.load_sweep(f, out=tmp_path / "out")
    assert [r.label for r in s.runs] == ["small/s7", "vae/s7"]  # the folder names the seed the run has
    spec = s.runs[1].spec()  # a section whose kind changes replaces the base's (spec.load.deep_merge)
    assert (spec.model.KIND, spec.model.beta, spec.model.latent_dim, spec.seed) == ("vae", 4.0, 4, 7)
    assert spec.model.encoder.blocks == 12 and s.runs[0].spec().model.encoder.blocks == 3


def test_stages_run_in_order_and_refer_to_earlier_stages(tmp_path, tiny_specs):
    f = write(tmp_path / "st.yaml", {"name": "st", "specs": ["specs/ae.yaml"], "seeds": [0, 1], "stages": [
        {"name": "pre", "overrides": {"data.exclude": {"shape": ["heart"]}}},
        {"name": "enc", "overrides": {"train.init_from": "@pre", "train.trainable": "encoder"}},
        {"name": "more", "overrides": {"train.init_from": "@enc"}}]})
    s = sw.load_sweep(f, out=tmp_path / "out")
    assert [r.label for r in s.runs] == ["ae-pre/s0", "ae-enc/s0", "ae-more/s0", "ae-pre/s1", "ae-enc/s1", "ae-more/s1"]
    specs = [r.spec() for r in s.runs]
    assert specs[0].data.exclude == {"shape": ("heart",)} and specs[1].data.exclude == {}
    assert specs[1].train.init_from == str((tmp_path / "out" / "ae-pre" / "s0").resolve())
    assert specs[2].train.init_from == str((tmp_path / "out" / "ae-enc" / "s0").resolve())
    assert specs[4].train.init_from == str((tmp_path / "out" / "ae-pre" / "s1").resolve())  # same seed's stage
    assert (specs[1].train.trainable, specs[2].train.trainable) == ("encoder", "all")


def test_extension_keys_hold_anchors_and_are_ignored(tmp_path, tiny_specs):
    text = """name: anchors
base: ../specs/ae.yaml
x-vae: &vae {kind: vae, latent_dim: 4, beta: 3.0}
models:
  a: {model: *vae}
  b: {model: {<<: *vae, beta: 5.0}}
"""
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "anchors.yaml"
    f.write_text(text)
    s = sw.load_sweep(f, out=tmp_path / "out")
    assert [(r.label, r.spec().model.KIND, r.spec().model.beta) for r in s.runs] == [("a/s0", "vae", 3.0),
                                                                                      ("b/s0", "vae", 5.0)]


@pytest.mark.parametrize("data, where, words", [
    ({"name": "x", "specs": ["specs/ae.yaml"], "seed": [0]}, "seed", "unknown key; allowed: name"),
    ({"specs": ["specs/ae.yaml"]}, "name", "missing required key (str): sweep name"),
    ({"name": "a/b", "specs": ["specs/ae.yaml"]}, "name", "expected a name of letters, digits"),
    ({"name": "x", "specs": ["specs/nope.yaml"]}, "specs[0]", "spec file not found"),
    ({"name": "x", "specs": "specs/ae.yaml"}, "specs", "expected list of str, got 'specs/ae.yaml'"),
    ({"name": "x"}, "specs", "at least one model"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "seeds": [0, "one"]}, "seeds[1]", "expected int, got 'one'"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "seeds": [0, -1]}, "seeds[1]", "expected an int in [0, 4294967295]"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "seeds": [1, 1]}, "seeds", "repeated seeds in [1, 1]"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "grid": {"train.lr": []}}, "grid.train.lr", "non-empty list"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "overrides": {"train..lr": 1}}, "overrides.'train..lr'",
     "expected a dotted key path such as train.steps"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "launcher": "sbatch"}, "launcher",
     "allowed: local, torchrun, slurm"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "nproc": 0}, "nproc", "expected an int in [1, 1024], got 0"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "stages": [{"name": "a", "overrides": {"train.init_from": "@b"}},
                                                          {"name": "b"}]},
     "stages[0].overrides.train.init_from", "unknown stage '@b'"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "stages": [{"name": "a"}, {"name": "a"}]}, "stages[1].name",
     "stage 'a' appears twice"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "stages": [{"name": "a", "steps": 3}]}, "stages[0].steps",
     "unknown key"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "heldout": {"h": {"include": {"shape": "heart"}}}},
     "heldout.h.include.shape", "expected list of int or str, got 'heart'"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "heldout": {"h": {"include": {"shape": []}}}},
     "heldout.h.include.shape", "non-empty list"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "heldout": {"h": {"split": "train"}}}, "heldout.h.split",
     "'train' is not allowed; allowed: val, test"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "slurm": {"gpus_per_task": "two"}}, "slurm.gpus_per_task",
     "expected int, got 'two'"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "slurm": {"mem": "lots"}}, "slurm.mem", "such as 64G"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "slurm": {"sbatch": {"--qos": "high"}}}, "slurm.sbatch.--qos",
     "expected an sbatch option name without '--'"),
    ({"name": "x", "specs": ["specs/ae.yaml"], "slurm": {"cluster": "aws"}}, "slurm.cluster",
     "allowed: slurm, local"),
])
def test_bad_sweeps_name_the_key_path(tmp_path, tiny_specs, data, where, words):
    f = write(tmp_path / "bad.yaml", data)
    with pytest.raises(SpecError) as info:
        sw.load_sweep(f, out=tmp_path / "out")
    assert info.value.path == f"{f}: {where}" and words in info.value.message


def test_bad_run_spec_names_key_and_run_and_cli_exits_2(tmp_path, tiny_specs, capsys):
    f = write(tmp_path / "b.yaml", {"name": "b", "specs": ["specs/ae.yaml"], "overrides": {"train.steps": "many"}})
    assert sw.main([str(f), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: train.steps: expected int, got 'many' (sweep run ae/s0)"
    assert not (tmp_path / "out").exists()
    assert sw.main([str(tmp_path / "none.yaml"), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == f"error: sweep file not found: {tmp_path / 'none.yaml'}"
    # a held-out filter naming an unknown factor value is caught before training
    f = write(tmp_path / "h.yaml", {"name": "h", "specs": ["specs/ae.yaml"],
                                    "heldout": {"ball": {"include": {"shape": ["ball"]}}}})
    assert sw.main([str(f), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert "heldout.ball.include.shape: unknown value 'ball'" in capsys.readouterr().err


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_shipped_sweeps_expand_and_every_run_validates(path, tmp_path):
    s = sw.load_sweep(path, out=tmp_path / "out")
    specs = {r.label: r.spec() for r in s.runs}
    sw.check_heldout(s, specs)
    expected = {"smoke": 2 * 2, "table1": 11 * 3, "extrapolation": 7 * 3 * 4, "transfer": 7 * 3 * 3,
                "table1_cpu": 4 * 3, "quickstart": 2, "extrapolation_cpu16": 3 * 3 * 4,
                "perturbation_cpu16": 3 * 3 * 3, "transfer_cpu16": 2 * 3 * 3, "causalvae_pendulum": 6 * 3,
                "icm_digits": 5 * 5}[s.name]
    assert len(s.runs) == expected
    assert all(spec.track.experiment == s.name for spec in specs.values())
    if s.name == "extrapolation":  # 001 sec 3.2: 80k steps without the ball, then 20k on everything
        first, enc = specs["sae12-neither/s0"], specs["sae12-encoder/s0"]
        assert first.data.exclude == {"shape": ("sphere",)} and first.train.steps == 80000
        assert enc.data.exclude == {} and enc.train.steps == 20000 and enc.train.trainable == "encoder"
        assert enc.train.init_from == str((tmp_path / "out" / "sae12-neither" / "s0").resolve())
    if s.name == "extrapolation_cpu16":  # 001's 80k : 20k as 2,000 : 500, every stage at 16x16
        first, dec = specs["bvae-neither/s2"], specs["bvae-decoder/s2"]
        assert first.data.exclude == {"shape": ("sphere",)} and first.train.steps == 2000
        assert dec.data.exclude == {} and dec.train.steps == 500 and dec.train.trainable == "decoder"
        assert {sp.data.resolution for sp in specs.values()} == {16}
    if s.name == "perturbation_cpu16":  # 002 sec 5.1: latent size = 6 factors; pattern and noise at the same eps
        assert {sp.model.latent_dim for sp in specs.values()} == {6}
        pattern, noise = specs["btcvae-pattern/s1"].data.perturbation, specs["factorvae-noise/s1"].data.perturbation
        assert (pattern.KIND, noise.KIND, pattern.epsilon, noise.epsilon) == ("pattern", "uniform", 0.1, 0.1)
        assert pattern.run.startswith("runs/perturbation_cpu16/bvae/s") and specs["bvae/s0"].data.perturbation is None
    if s.name == "causalvae_pendulum":  # 003 as set up there (slides eqs 33, 38, 41) against the shipped spec
        pub, ship = specs["published/s0"], specs["shipped/s0"]
        assert (pub.graph.forbidden_edges, pub.graph.sparsity, pub.model.graph_from, pub.model.label_loss,
                pub.model.prior_std, pub.model.dag_schedule) == ((), 0.0, "joint", "sigmoid", 1.0, "fixed")
        assert (len(ship.graph.forbidden_edges), ship.model.graph_from, ship.model.label_loss,
                ship.model.prior_std) == (4, "labels", "gated_mlp", 0.1)
        assert {sp.train.steps for sp in specs.values()} == {2000}
    if s.name == "icm_digits":  # Algorithm 1 alone (004 sec 3) against the shipped additions
        pub, bf16 = specs["published/s4"], specs["shipped-bf16-scoring/s0"]
        assert (pub.model.revive_every, pub.model.discriminator_r1, pub.model.score_precision,
                pub.train.precision) == (0, 0.0, "fp32", "fp32")
        assert (bf16.model.score_precision, bf16.train.precision) == ("autocast", "bf16")
    if s.name == "table1_cpu":  # every model on the same budget, in fp32, on 10,000 / 5,000 metric points
        assert {(sp.train.steps, sp.train.lr, sp.train.lr_schedule, sp.train.precision, sp.model.latent_dim,
                 sp.evaluate.val_samples, sp.data.resolution) for sp in specs.values()} == {
            (3000, 1.5e-3, "cosine", "fp32", 12, 10000, 32)}
        assert specs["btcvae/s0"].model.estimator == "mws"
    if s.name == "quickstart":  # the AE baseline has the quickstart's budget exactly
        a, q = specs["ae/s0"], specs["sae12/s0"]
        assert a.train == q.train and a.data == q.data and a.model.latent_dim == q.model.latent_dim == 12
        assert a.evaluate.baseline is None and q.evaluate.baseline is None
    if s.name == "transfer":  # 000 sec 3: boxes + cylinders, then balls, then capsules, in series
        chain = [specs[f"sae12-stage{i}/s0"] for i in (1, 2, 3)]
        assert [c.data.include["shape"] for c in chain] == [("cube", "cylinder"), ("sphere",), ("capsule",)]
        assert [c.train.steps for c in chain] == [80000, 20000, 20000]
        assert chain[2].train.init_from.endswith("sae12-stage2/s0")


# ------------------------------------------------------------------------------ init_from and trainable
def test_init_from_loads_weights_bit_equal_and_errors_name_the_key(tmp_path):
    src = Experiment(tiny_spec("sae"), out=tmp_path, progress=False)
    src.run()
    saved = load_checkpoint(src.run_dir / "checkpoints" / "last.pt")["model"]
    dst = Experiment(tiny_spec("sae", overrides=[f"train.init_from={src.run_dir}"]), out=tmp_path / "b",
                     progress=False)
    assert all(torch.equal(v, saved[k]) for k, v in dst.model.state_dict().items())
    fresh = Experiment(tiny_spec("sae", overrides=["seed=1"]), out=tmp_path / "c", progress=False)
    assert not all(torch.equal(v, saved[k]) for k, v in fresh.model.state_dict().items())
    with pytest.raises(SpecError, match=r"train.init_from: no checkpoint at .*nowhere \(give a run folder"):
        Experiment(tiny_spec("sae", overrides=[f"train.init_from={tmp_path / 'nowhere'}"]), out=tmp_path / "d")
    with pytest.raises(SpecError, match=r"train.init_from: the weights in .* do not fit this model .*shape"):
        Experiment(tiny_spec("sae", overrides=[f"train.init_from={src.run_dir}", "model.latent_dim=8"]),
                   out=tmp_path / "e")


@pytest.mark.parametrize("kind", ["ae", "sae", "vlae"])
@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_trainable_freezes_exactly_the_other_part(tmp_path, kind, which):
    """encoder = what encode() uses, decoder = what decode() uses; checked against the modules' names
    (ae/sae: encoder.* / decoder.*; VLAE: inference enc.* + infer.*, generative gen.* + dec.* + out.*)."""
    from causalrep.build import build_dataset, build_model, build_split
    from causalrep.train import Trainer
    from causalrep.train.distributed import NullTracker

    spec = tiny_spec(kind, **({"rungs": 2} if kind == "vlae" else {}))
    ds = build_dataset(spec)
    model = build_model(spec, ds)
    names = {"ae": {"encoder": ("encoder.",), "decoder": ("decoder.",)},
             "sae": {"encoder": ("encoder.",), "decoder": ("decoder.",)},
             "vlae": {"encoder": ("enc.", "infer."), "decoder": ("gen.", "dec.", "out.")}}[kind]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tr = Trainer(model=model, dataset=ds, split=build_split(spec, ds), run_dir=tmp_path, tracker=NullTracker(),
                 steps=1, batch_size=4, progress=False, trainable=which)
    tr.train_step(tr.next_batch())
    for n, p in model.named_parameters():
        if n.startswith(names[which]):
            assert p.requires_grad and p.grad is not None and not torch.equal(p, before[n]), n
        else:
            assert not p.requires_grad and p.grad is None and torch.equal(p, before[n]), n
    assert {id(p) for p in tr.main_params} == {id(p) for n, p in model.named_parameters() if n.startswith(names[which])}


# ---------------------------------------------------------------------------------------- held-out sets
def test_heldout_index_and_mse_x1000(tmp_path):
    from causalrep.build import build_dataset, build_split
    from causalrep.heldout import heldout_index, mse_x1000

    spec = tiny_spec("ae", overrides=["data.exclude={shape: [heart]}"])
    ds = build_dataset(spec)
    idx = heldout_index(spec, ds, include={"shape": ["heart"]}, n=50)
    assert len(idx) == 50 and set(ds.index_to_factors(idx)[:, 0]) == {2}  # dSprites' heart is shape 2
    assert not np.isin(idx, build_split(spec, ds).train).any()

    class Blank(torch.nn.Module):  # reconstructs every image as black: MSE = mean(x^2)
        def reconstruct(self, x):
            return torch.zeros_like(x)

    x = ds.images_at(idx)
    assert mse_x1000(Blank(), ds, idx, batch_size=16) == pytest.approx(1000 * float((x.double() ** 2).mean()),
                                                                        rel=1e-6)


# ------------------------------------------------------------------------------------------------ tables
def fake_run(root: Path, name: str, seed: int, metrics: dict, stage: str | None = None, stage_index: int = 0):
    d = root / name / f"s{seed}"
    write(d / "spec.yaml", {"name": name, "seed": seed})
    (d / "metrics.json").write_text(json.dumps(metrics))
    if stage:
        (d / "sweep.json").write_text(json.dumps({"sweep": "fake", "stage": stage, "stage_index": stage_index}))
    return d


def test_table_mean_and_sample_std_on_hand_made_runs(tmp_path):
    for seed, v in enumerate([1.0, 2.0, 4.0]):
        fake_run(tmp_path, "sae6", seed, {"mig": v, "step": 10, "fid_features": "random_conv"})
    fake_run(tmp_path, "ae", 0, {"mig": 0.5, "irs": 0.25})
    assert tb.main([str(tmp_path)]) == 0
    md = (tmp_path / "table.md").read_text()
    # mean 7/3; sample std sqrt(((4/3)^2 + (1/3)^2 + (5/3)^2) / 2) = sqrt(7/3) = 1.5275
    assert "| model | runs | IRS | MIG |" in md
    assert "| sae6 | 3 | – | 2.333 ± 1.528 |" in md and "| ae | 1 | 0.250 | 0.500 |" in md
    rows = {r["model"]: r for r in csv.DictReader(open(tmp_path / "table.csv"))}
    assert float(rows["sae6"]["mig_mean"]) == pytest.approx(7 / 3, rel=1e-15)
    assert float(rows["sae6"]["mig_std"]) == pytest.approx(math.sqrt(7 / 3), rel=1e-15)
    assert math.isnan(float(rows["ae"]["mig_std"])) and rows["sae6"]["runs"] == "3"
    assert "step_mean" not in rows["sae6"]  # bookkeeping and strings are not metrics


def test_table_columns_by_stage_in_sweep_order(tmp_path):
    for i, stage in enumerate(["neither", "encoder", "decoder", "both"]):
        for seed in (0, 1):
            fake_run(tmp_path, f"sae12-{stage}", seed, {"heldout_ball_mse_x1000": 10.0 * (4 - i) + seed},
                     stage=stage, stage_index=i)
    assert tb.main([str(tmp_path), "--metrics", "heldout_ball_mse_x1000", "--columns", "stage"]) == 0
    md = (tmp_path / "table.md").read_text()
    assert "| model | runs | neither | encoder | decoder | both |" in md
    assert "| sae12 | 2 | 40.500 ± 0.707 | 30.500 ± 0.707 | 20.500 ± 0.707 | 10.500 ± 0.707 |" in md
    assert tb.main([str(tmp_path), "--metrics", "nope"]) == 1


# ------------------------------------------------------------------------------------- smoke end to end
def test_table_docs_replaces_only_its_marked_block(tmp_path, capsys):
    runs = tmp_path / "runs"
    fake_run(runs, "ae", 0, {"mig": 0.5})
    docs = tmp_path / "results.md"
    before, after = "# Results\n\ntext above\n\n", "<!-- /table -->\n\ntext below\n"
    docs.write_text(before + f"<!-- table {runs} -->\nthe old table\n" + after)
    assert tb.main([str(runs), "--docs", str(docs)]) == 0
    table = (runs / "table.md").read_text()
    assert docs.read_text() == before + f"<!-- table {runs} -->\n" + table + after
    assert "| ae | 1 | 0.500 |" in table
    fake_run(runs, "ae", 1, {"mig": 1.5})  # a second seed: the same block is replaced again
    assert tb.main([str(runs), "--docs", str(docs)]) == 0
    assert docs.read_text() == before + f"<!-- table {runs} -->\n" + (runs / "table.md").read_text() + after
    assert "| ae | 2 | 1.000 ± 0.707 |" in docs.read_text()
    docs.write_text("# no markers\n")
    assert tb.main([str(runs), "--docs", str(docs)]) == 1
    assert f"has no '<!-- table {runs} -->'" in capsys.readouterr().err
    assert docs.read_text() == "# no markers\n"


def test_smoke_sweep_end_to_end_table_equals_metrics_json(tmp_path):
    out = tmp_path / "smoke"
    tiny = ["train.steps=2", "train.batch_size=4", "train.log_every=1", "train.checkpoint_every=2",
            "train.val_every=2", "evaluate.val_samples=64", "evaluate.hybrid_latents=8",
            "evaluate.traversal_steps=3", "evaluate.metrics=[reconstruction, mig]", "track.kind=jsonl"]
    results = tmp_path / "results" / "smoke"
    args = [str(ROOT / "specs" / "sweeps" / "smoke.yaml"), "--out", str(out), "--no-progress", "--results", str(results)]
    assert sw.main(args + [a for t in tiny for a in ("--set", t)]) == 0
    runs = sorted(p.parent for p in out.rglob("metrics.json"))
    assert [f"{r.parent.name}/{r.name}" for r in runs] == ["ae/s0", "ae/s1", "sae12/s0", "sae12/s1"]
    for r in runs:
        spec = yaml.safe_load((r / "spec.yaml").read_text())
        assert spec["track"]["experiment"] == "smoke" and spec["seed"] == int(r.name[1:])
    assert tb.main([str(out)]) == 0
    rows = {row["model"]: row for row in csv.DictReader(open(out / "table.csv"))}
    md = (out / "table.md").read_text()
    for model in ("ae", "sae12"):
        ms = [json.loads((out / model / f"s{s}" / "metrics.json").read_text()) for s in (0, 1)]
        for key in ("mig", "val_recon_error"):
            values = [m[key] for m in ms]
            assert float(rows[model][f"{key}_mean"]) == (values[0] + values[1]) / 2
            assert float(rows[model][f"{key}_std"]) == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        cell = f"{(ms[0]['mig'] + ms[1]['mig']) / 2:.3f} ± {abs(ms[0]['mig'] - ms[1]['mig']) / math.sqrt(2):.3f}"
        assert f"| {model} | 2 | {cell} |" in md
    # --results keeps exactly the small files of each run, and they tabulate to the same table
    assert sorted(str(f.relative_to(results)) for f in results.rglob("*") if f.is_file()) == sorted(
        f"{m}/s{s}/{n}" for m in ("ae", "sae12") for s in (0, 1) for n in ("metrics.json", "spec.yaml", "sweep.json"))
    assert tb.main([str(results)]) == 0
    assert (results / "table.md").read_text() == md
    # a second call finds every run done and trains nothing
    stamp = (runs[0] / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert sw.main(args + [a for t in tiny for a in ("--set", t)]) == 0
    assert (runs[0] / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp


def test_staged_sweep_end_to_end_with_heldout_errors(tmp_path, tiny_specs):
    """001 Table 3 in miniature: pre-train without hearts, update the decoder only; every stage gets the
    held-out heart error, and the decoder-only stage leaves the encoder bit-equal to the first stage's."""
    f = write(tmp_path / "x.yaml", {"name": "x", "specs": ["specs/ae.yaml"], "seeds": [0], "stages": [
        {"name": "neither", "overrides": {"data.exclude": {"shape": ["heart"]}}},
        {"name": "decoder", "overrides": {"train.init_from": "@neither", "train.trainable": "decoder"}}],
        "heldout": {"heart": {"include": {"shape": ["heart"]}, "n": 32}}})
    assert sw.main([str(f), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    a, b = (load_checkpoint(tmp_path / "out" / f"ae-{s}" / "s0" / "checkpoints" / "last.pt")["model"]
            for s in ("neither", "decoder"))
    assert all(torch.equal(a[k], b[k]) == k.startswith("encoder.") for k in a if not k.startswith("latent_bank"))
    for s in ("neither", "decoder"):
        m = json.loads((tmp_path / "out" / f"ae-{s}" / "s0" / "metrics.json").read_text())
        assert m["heldout_heart_images"] == 32 and m["heldout_heart_mse_x1000"] > 0


def test_a_failed_run_is_listed_at_the_end_its_later_stages_skipped_the_others_run(tmp_path, tiny_specs, capsys):
    """launcher local: a run that raises does not stop the sweep; it is listed with its error (traceback in its
    error.log), its chain's later stage is not run, the sweep exits 1; running again retries only it."""
    nowhere = tmp_path / "nowhere"
    f = write(tmp_path / "f.yaml", {"name": "f", "base": "specs/ae.yaml",
                                    "models": {"bad": {"train": {"init_from": str(nowhere)}}, "ok": {}},
                                    "stages": [{"name": "pre"}, {"name": "dec", "overrides": {
                                        "train.init_from": "@pre", "train.trainable": "decoder"}}]})
    out = tmp_path / "out"
    assert sw.main([str(f), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.splitlines()
    log = out / "bad-pre" / "s0" / "error.log"
    assert err == ["error: 2 of 4 runs failed; running the sweep again retries them (finished runs are kept, "
                   "interrupted ones continue from their checkpoints):",
                   f"  bad-pre/s0: train.init_from: no checkpoint at {nowhere} (give a run folder holding "
                   f"checkpoints/last.pt, or a checkpoint file) (traceback in {log})",
                   "  bad-dec/s0: not run: bad-pre/s0 failed"]
    assert "SpecError" in log.read_text() and not (out / "bad-dec").exists()
    assert all((out / g / "s0" / "metrics.json").is_file() for g in ("ok-pre", "ok-dec"))  # after the failure
    stamp = (out / "ok-dec" / "s0" / "metrics.json").stat().st_mtime_ns
    assert sw.main([str(f), "--out", str(out), "--no-progress"]) == 1  # the same failure again; ok-* untouched
    assert (out / "ok-dec" / "s0" / "metrics.json").stat().st_mtime_ns == stamp
    assert "2 of 4 runs failed" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_launcher_runs_each_stage_as_a_two_process_job(tmp_path, tiny_specs):
    """launcher: torchrun: each run is `torchrun --nproc-per-node 2 -m causalrep.run` on its resolved spec;
    the stage reference, trainable and the held-out metrics work across the process boundary."""
    f = write(tmp_path / "t.yaml", {"name": "t", "specs": ["specs/ae.yaml"], "seeds": [0],
                                    "overrides": {"train.threads": 1}, "launcher": "torchrun", "nproc": 2, "stages": [
        {"name": "pre", "overrides": {"data.exclude": {"shape": ["heart"]}}},
        {"name": "dec", "overrides": {"train.init_from": "@pre", "train.trainable": "decoder"}}],
        "heldout": {"heart": {"include": {"shape": ["heart"]}, "n": 16}}})
    assert sw.main([str(f), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    a, b = (load_checkpoint(tmp_path / "out" / f"ae-{s}" / "s0" / "checkpoints" / "last.pt")["model"]
            for s in ("pre", "dec"))
    assert all(torch.equal(a[k], b[k]) == k.startswith("encoder.") for k in a if not k.startswith("latent_bank"))
    m = json.loads((tmp_path / "out" / "ae-dec" / "s0" / "metrics.json").read_text())
    assert m["heldout_heart_images"] == 16 and m["step"] == 4


def test_table_layout_orders_rows_adds_paper_figures_and_notes(tmp_path):
    for seed, v in enumerate([0.5, 0.7]):
        fake_run(tmp_path, "sae6", seed, {"dci_disentanglement": v, "mig": 0.1})
    fake_run(tmp_path, "ae", 0, {"dci_disentanglement": 0.2, "mig": 0.05})
    write(tmp_path / "table.yaml", {"title": "a. Table 1", "intro": "Intro text.", "metrics": ["dci_disentanglement", "mig"],
                                    "rows": ["sae6", "ae"], "labels": {"sae6": "SAE-6"}, "paper_label": "001",
                                    "paper": {"sae6": {"dci_disentanglement": 0.815}, "ae": {"dci_disentanglement": 0.326}},
                                    "notes": ["Command: x"]})
    assert tb.main([str(tmp_path)]) == 0
    assert (tmp_path / "table.md").read_text() == (
        "### a. Table 1\n\nIntro text.\n\nmean ± sample standard deviation over the runs (seeds) of each row\n\n"
        "| model | runs | DCI-d | DCI-d (001) | MIG |\n|---|---:|---:|---:|---:|\n"
        "| SAE-6 | 2 | 0.600 ± 0.141 | 0.815 | 0.100 ± 0.000 |\n"  # sample std of 0.5, 0.7 = 0.1414
        "| ae | 1 | 0.200 | 0.326 | 0.050 |\n\nCommand: x\n")
    # a second table of the same runs, from another folder (runs: relative to its table.yaml)
    write(tmp_path / "second" / "table.yaml", {"title": "b", "runs": [".."], "metrics": ["mig"], "rows": ["ae"]})
    assert tb.main([str(tmp_path / "second")]) == 0
    assert "| ae | 1 | 0.050 |\n| sae6 | 2 | 0.100 ± 0.000 |\n" in (tmp_path / "second" / "table.md").read_text()
    write(tmp_path / "table.yaml", {"colour": "red"})
    assert tb.main([str(tmp_path)]) == 1


def test_add_heldout_scores_only_the_sets_a_run_lacks(tmp_path, tiny_specs, monkeypatch):
    f = write(tmp_path / "h.yaml", {"name": "h", "specs": ["specs/ae.yaml"],
                                    "heldout": {"old": {"include": {"shape": ["heart"]}},
                                                "new": {"exclude": {"shape": ["heart"]}, "n": 5}}})
    s = sw.load_sweep(f, out=tmp_path / "out")
    run = s.runs[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "metrics.json").write_text(json.dumps({"heldout_old_mse_x1000": 1.5, "mig": 0.2}))
    asked = []

    def fake(run_dir, subsets, device="cpu"):
        asked.append(dict(subsets))
        return {f"heldout_{name}_mse_x1000": 7.0 for name in subsets}

    monkeypatch.setattr(sw, "heldout_metrics", fake)  # the name sweep calls (imported from causalrep.heldout)
    sw.add_heldout(run, s)
    sw.add_heldout(run, s)  # now complete: nothing is scored again
    assert asked == [{"new": HeldoutSpec(exclude={"shape": ("heart",)}, n=5)}]  # the sweep file's set, validated
    assert json.loads((run.run_dir / "metrics.json").read_text()) == {
        "heldout_old_mse_x1000": 1.5, "heldout_new_mse_x1000": 7.0, "mig": 0.2}
