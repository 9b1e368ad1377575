"""Counterfactual truth on the pendulum: do(pendulum angle) and do(light angle) read by a factor regressor.

The pendulum knows its mechanisms (causalrep.data.pendulum.shadow), so a counterfactual image can be checked:
a small CNN regressor, trained here on true pendulum images only (independent of the models), reads the four
variables off each counterfactual image; the errors say whether (i) the intervened cause sits at its set value,
(ii) the other cause is unchanged and (iii) the effects moved to where the dataset's own `intervene` puts them.

    python tools/pendulum_counterfactuals.py --causalvae RUN_DIR --vae RUN_DIR [--n 512] [--out docs/img]

CausalVAE: model.do(x, {node: model.value_of(node, a)}) (value-level do(); descendants recomputed by the learned
mechanisms). VAE: the latent dim most correlated with the cause on training images is set naively through a
linear fit of that dim on the cause. Prints a Markdown table, writes intervention grids, and last one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.utils import save_image
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causalrep.data.pendulum import CAUSES, LIGHT_ANGLES, PENDULUM_ANGLES, Pendulum  # noqa: E402
from causalrep.experiment import load_run  # noqa: E402
from causalrep.generate import intervention_grid  # noqa: E402

NAMES = ("pendulum_angle", "light_angle", "shadow_position", "shadow_length")


class Regressor(nn.Module):
    """Image (3, R, R) -> the 4 standardised labels; three stride-2 conv layers and an MLP."""

    def __init__(self, resolution: int):
        super().__init__()
        side = resolution // 8
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, 4))

    def forward(self, x):
        return self.net(x)


def train_regressor(ds: Pendulum, train_idx: np.ndarray, steps: int, seed: int = 0):
    """Fit the regressor on true images of the training split; returns (model, mean, std) of the labels."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    f = ds.index_to_factors(train_idx)
    lab = ds.labels(f)
    mean, std = lab.mean(0), lab.std(0)
    images = ds.images(f)
    target = torch.as_tensor((lab - mean) / std, dtype=torch.float32)
    reg = Regressor(ds.resolution)
    opt = torch.optim.Adam(reg.parameters(), lr=1e-3)
    for _ in tqdm(range(steps), desc="regressor", mininterval=2.0):
        pick = torch.as_tensor(rng.integers(0, len(images), 64))
        loss = ((reg(images[pick]) - target[pick]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    reg.eval()
    return reg, mean, std


@torch.no_grad()
def read(reg, mean, std, images: torch.Tensor) -> np.ndarray:
    return torch.cat([reg(b) for b in images.split(256)]).numpy() * std + mean


@torch.no_grad()
def naive_vae_do(run, ds: Pendulum, train_idx: np.ndarray):
    """A function (x, cause, values) -> images that sets the VAE latent dim most correlated with `cause`
    through a linear fit of that dim on the cause (the naive intervention of a model without a graph)."""
    f = ds.index_to_factors(train_idx[:2048])
    mu = torch.cat([run.model.encode(b) for b in ds.images(f).split(256)]).numpy()
    lab = ds.labels(f)
    fits = {}
    for k, cause in enumerate(CAUSES):
        corr = [abs(np.corrcoef(mu[:, d], lab[:, k])[0, 1]) for d in range(mu.shape[1])]
        d = int(np.nanargmax(corr))
        slope, icpt = np.polyfit(lab[:, k], mu[:, d], 1)
        fits[cause] = (d, slope, icpt, float(corr[d]))

    def do(x, cause, values):
        d, slope, icpt, _ = fits[cause]
        u = run.model.encode(x).clone()
        u[:, d] = torch.as_tensor(slope * values + icpt, dtype=u.dtype)
        return run.model.decode(u)
    return do, fits


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--causalvae", required=True, help="run folder of specs/causalvae_pendulum.yaml")
    p.add_argument("--vae", help="run folder of specs/vae_pendulum.yaml (the naive baseline)")
    p.add_argument("--n", type=int, default=512, help="held-out (test split) images")
    p.add_argument("--regressor-steps", type=int, default=1500)
    p.add_argument("--regressor-cache", default=None, help="file to keep the trained regressor in (reused when present)")
    p.add_argument("--out", default=None, help="folder for the intervention grids (PNG)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cv = load_run(args.causalvae)
    ds, split = cv.dataset, cv.split
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cache = Path(args.regressor_cache) if args.regressor_cache else None
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=False)
        reg = Regressor(ds.resolution)
        reg.load_state_dict(saved["state"])
        reg.eval()
        mean, std = saved["mean"], saved["std"]
    else:
        reg, mean, std = train_regressor(ds, split.train, args.regressor_steps, args.seed)
        if cache is not None:
            torch.save({"state": reg.state_dict(), "mean": mean, "std": std}, cache)
    test = split.test[:args.n]
    f = ds.index_to_factors(test)
    x = ds.images(f)
    truth = ds.labels(f)
    rng = np.random.default_rng(args.seed + 1)
    targets = {"pendulum_angle": rng.uniform(PENDULUM_ANGLES[0], PENDULUM_ANGLES[-1], len(test)),
               "light_angle": rng.uniform(LIGHT_ANGLES[0], LIGHT_ANGLES[-1], len(test))}
    floor = np.abs(read(reg, mean, std, x) - truth).mean(0)  # the regressor's own error on true images

    def cv_do(xb, cause, values):
        v = cv.model.value_of(cause, torch.as_tensor(values, dtype=torch.float32))
        return cv.model.do(xb, {cause: v})

    models = {"CausalVAE (do on z, mechanisms)": cv_do,
              # the reference for (iii): the input itself, nothing moved (its effects stay where x had them)
              "input image unchanged (no intervention)": lambda xb, cause, values: xb}
    fits = None
    if args.vae:
        vae = load_run(args.vae)
        models["VAE (latent set naively)"] = naive_vae_do(vae, ds, split.train)[0]
        fits = naive_vae_do(vae, ds, split.train)[1]
    rows, record = [], {"regressor_error_on_true_images": dict(zip(NAMES, floor.round(4).tolist()))}
    for label, do in models.items():
        for k, cause in enumerate(CAUSES):
            cf = torch.cat([do(xb, cause, vb) for xb, vb in zip(x.split(128), np.array_split(targets[cause],
                                                                                          (len(x) + 127) // 128))])
            want = ds.intervene(truth, {cause: targets[cause]})  # the dataset's own counterfactual labels
            err = np.abs(read(reg, mean, std, cf) - want).mean(0)
            other = 1 - k
            rows.append((label, f"do({cause})", err[k], err[other], err[2], err[3]))
            record[f"{label.split()[0].lower().replace('input', 'unchanged')}/do_{cause}"] = {"intervened": round(float(err[k]), 4),
                                                               "other_cause": round(float(err[other]), 4),
                                                               "shadow_position": round(float(err[2]), 4),
                                                               "shadow_length": round(float(err[3]), 4)}
    print("| model | intervention | intervened cause (deg) | other cause (deg) | shadow position | shadow length |")
    print("|---|---|---|---|---|---|")
    print(f"| regressor on true images | none | {floor[0]:.2f} / {floor[1]:.2f} | | {floor[2]:.3f} | {floor[3]:.3f} |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.3f} | {r[5]:.3f} |")
    spread = ds.labels(ds.index_to_factors(split.train)).std(0)
    print("label std on the training split: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(NAMES, spread)))
    record["label_std"] = dict(zip(NAMES, spread.round(4).tolist()))
    if fits:
        print("VAE naive dims: " + ", ".join(f"{c}: dim {d} (|corr| {r:.2f})" for c, (d, _, _, r) in fits.items()))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        lo, hi = np.percentile(ds.labels(ds.index_to_factors(split.train)), [5, 95], axis=0)
        grid_labels = {n: [f"{v:.1f}" for v in np.linspace(lo[i], hi[i], 7)] for i, n in enumerate(NAMES)}
        values = {n: [cv.model.value_of(n, float(v)) for v in np.linspace(lo[i], hi[i], 7)]
                  for i, n in enumerate(NAMES)}
        for j in range(3):  # rows: do(node) over its label's 5-95 % range, left to right; last: input, recon.
            grid = intervention_grid(cv.model, x[j:j + 1], values, value_labels=grid_labels,
                                     title=f"do() on test image {j + 1}")
            save_image(grid, out / f"causalvae_interventions_{j}.png")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
