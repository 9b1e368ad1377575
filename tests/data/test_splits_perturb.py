"""Splits and factor filters; the 002 perturbation and its uniform-noise control; device residency."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from causalrep.build import build_dataset, build_split
from causalrep.data import DATASETS, Split, factor_mask
from causalrep.data.perturb import PatternPerturbation, UniformNoise, factor_s
from causalrep.errors import DataError, SpecError
from causalrep.spec import load_spec

from conftest import tiny_data


def test_split_fractions_disjoint_and_covering():
    s = Split(1000, (0.7, 0.1, 0.2), seed=3)
    assert (len(s.train), len(s.val), len(s.test)) == (700, 100, 200)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert len(np.unique(allidx)) == 1000


def test_split_is_the_same_in_another_process():
    code = ("import numpy as np; from causalrep.data import Split; s = Split(737280, (0.7, 0.1, 0.2), 0); "
            "print(int(s.train[:1000].sum()), int(s.test[-1000:].sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    s = Split(737280, (0.7, 0.1, 0.2), 0)
    assert [int(v) for v in out] == [int(s.train[:1000].sum()), int(s.test[-1000:].sum())]


def test_exclude_a_shape_for_the_extrapolation_experiment():
    spec = load_spec(data=tiny_data("sae", overrides=None) if False else tiny_data("sae"),
                     overrides=["data.exclude={shape: [heart]}"])
    ds = build_dataset(spec)
    split = build_split(spec, ds)
    shapes = ds.index_to_factors(np.concatenate([split.train, split.val, split.test]))[:, 0]
    assert set(shapes.tolist()) == {0, 1} and len(shapes) == len(ds) * 2 // 3
    inc = build_split(load_spec(data=tiny_data("sae"), overrides=["data.include={shape: [2], scale: [0, 1]}"]), ds)
    f = ds.index_to_factors(inc.train)
    assert set(f[:, 0].tolist()) == {2} and set(f[:, 1].tolist()) == {0, 1}


@pytest.mark.parametrize("rule, words", [
    ({"colour": [0]}, "data.exclude.colour: unknown factor"),
    ({"shape": ["star"]}, "data.exclude.shape: unknown value 'star'; named values: square, ellipse, heart"),
    ({"scale": [6]}, "data.exclude.scale: value 6 is not an index 0..5"),
    ({"shape": [0, 1, 2]}, "data: the include/exclude filters leave no image"),
])
def test_filter_errors(rule, words):
    ds = DATASETS.get("dsprites")(resolution=16)
    with pytest.raises(SpecError) as info:
        factor_mask(ds, None, rule)
    assert str(info.value).startswith(words)


class Blank:
    """A stand-in dataset of black 6x6 images over one factor with 9 values."""
    factor_names, factor_sizes, factor_value_names, num_factors = ("s",), (9,), {}, 1
    channels, resolution, true_graph = 1, 6, None

    def images(self, factors):
        return torch.zeros(len(factors), 1, 6, 6)

    def factors_to_index(self, f):
        return np.asarray(f)[:, 0]


def test_pattern_shifts_by_round_s_over_c_on_a_hand_case():
    base = Blank()
    pert = PatternPerturbation(base, epsilon=0.1, s=factor_s(base, "s"), seed=0)
    p, c = pert.pattern, pert.column_factor
    f = pert.f(torch.tensor([0.0, 5.0]))
    for j in range(6):
        # (f(s))_{i,j} = p_{i',j}, i' = round(s / c_j) + i  (002 eq. 8); s = 0 is the pattern itself
        assert torch.equal(f[0, :, j], p[0:6, j])
        k = int(np.round(5.0 / float(c[j])))
        assert torch.equal(f[1, :, j], p[k:k + 6, j]), (j, k)
    assert set(p.unique().tolist()) == {-1.0, 1.0} and set(c.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0}
    clamped = PatternPerturbation(base, epsilon=0.1, s=factor_s(base, "s"), seed=0, fit="clamp")
    x = clamped.images(np.array([[5]]))
    assert torch.allclose(x[0, 0], (0.1 * f[1]).clamp(0, 1))  # black image: only the +eps cells survive
    # rescale: (x + eps f + eps) / (1 + 2 eps) keeps both signs, 0 and 0.2 / 1.2 on the black image
    x = pert.images(np.array([[5]]))
    assert torch.allclose(x[0, 0], (0.1 * f[1] + 0.1) / 1.2)
    assert set(torch.round(x[0, 0] * 1.2 / 0.2).unique().tolist()) == {0.0, 1.0}
    with pytest.raises(DataError, match="data.perturbation.fit: unknown 'wrap'"):
        PatternPerturbation(base, epsilon=0.1, s=factor_s(base, "s"), fit="wrap")


def test_perturbation_keeps_labels_and_magnitude():
    spec = load_spec(data=tiny_data("sae"), overrides=["data.perturbation={kind: pattern, factor: posX, epsilon: 0.05, "
                                                       "fit: clamp}"])
    ds = build_dataset(spec)
    plain = DATASETS.get("dsprites")(resolution=16)
    f = plain.sample_factors(16, np.random.default_rng(0))
    diff = ds.images(f) - plain.images(f)
    assert diff.abs().max() <= 0.05 + 1e-6 and diff.abs().max() > 0.04  # ||x~ - x||_inf <= eps (002 eq. 5)
    # the default rescale: undoing the affine map leaves x + eps f(s) exactly, every pixel moved by eps
    rescaled = build_dataset(load_spec(data=tiny_data("sae"), overrides=[
        "data.perturbation={kind: pattern, factor: posX, epsilon: 0.05}"]))
    undone = rescaled.images(f) * 1.1 - 0.05 - plain.images(f)
    assert torch.allclose(undone.abs(), torch.full_like(undone, 0.05), atol=1e-6)
    assert ds.factor_names == plain.factor_names and ds.factor_sizes == plain.factor_sizes
    with pytest.raises(SpecError, match="exactly one of `factor` or `run`"):
        load_spec(data=tiny_data("sae"), overrides=["data.perturbation={kind: pattern}"])


def test_uniform_control_is_bounded_fixed_per_image_and_spread():
    base = DATASETS.get("dsprites")(resolution=16)
    ds = UniformNoise(base, epsilon=0.1, seed=1)
    f = base.sample_factors(64, np.random.default_rng(0))
    d = ds.delta(f, torch.zeros(64, 1, 16, 16))
    assert d.abs().max() <= 0.1 and torch.equal(d, ds.delta(f, torch.zeros(64, 1, 16, 16)))
    # U(-eps, eps) has variance eps^2 / 3
    assert abs(float(d.var()) - 0.1 ** 2 / 3) < 0.1 ** 2 / 3 * 0.05


def test_resident_batches_equal_rendered_ones_to_uint8_precision(tmp_path):
    from causalrep.experiment import Experiment

    spec = load_spec(data=tiny_data("sae"), overrides=["data.include={shape: [0], scale: [0], orientation: [0]}",
                                                       "data.resident=always"])
    exp = Experiment(spec, out=tmp_path, progress=False)
    from causalrep.train import Trainer
    from causalrep.track.base import JsonlTracker

    kw = dict(model=exp.model, dataset=exp.dataset, split=exp.split, run_dir=tmp_path, tracker=JsonlTracker(tmp_path),
              steps=1, batch_size=8, progress=False)
    a, b = Trainer(**kw, resident="always"), Trainer(**kw, resident="never")
    assert a.resident is not None and a.resident.dtype == torch.uint8 and len(a.resident) == len(exp.split.train)
    assert b.resident is None
    assert (a.next_batch() - b.next_batch()).abs().max() <= 0.5 / 255 + 1e-7  # same indices, uint8 rounding


def test_perturbation_from_a_trained_vae_uses_its_least_noisy_latent(tmp_path):
    """002 eq. 6: s(x) = enc(x)_j with j = argmin_k <sigma_k^2> over the data, from a run folder."""
    from causalrep.experiment import Experiment, load_run

    exp = Experiment(load_spec(data=tiny_data("vae")), out=tmp_path, progress=False)
    exp.run()
    spec = load_spec(data=tiny_data("sae"), overrides=[f"data.perturbation={{kind: pattern, run: {exp.run_dir}, "
                                                       "epsilon: 0.1, scale: 3.0}"])
    ds = build_dataset(spec)
    run = load_run(exp.run_dir)
    x = run.dataset.images_at(run.split.train[:1024])
    with torch.no_grad():
        mu, logvar = run.model.posterior(x)
    j = int(logvar.exp().mean(0).argmin())
    assert ds.s.latent == j
    f = ds.sample_factors(4, np.random.default_rng(0))
    plain = DATASETS.get("dsprites")(resolution=16).images(f)
    with torch.no_grad():
        s = 3.0 * run.model.posterior(plain)[0][:, j]
    assert torch.allclose(ds.images(f), (plain + 0.1 * ds.f(s)[:, None] + 0.1) / 1.2, atol=1e-6)
