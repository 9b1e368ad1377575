"""The ICM committee's evaluation (004 sec 5): who wins which mechanism, and the downstream classifier check."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.base import GroundTruthDataset, Split
from ..data.mechanisms import MECHANISM_NAMES
from ..errors import SpecError
from ..models.icm import ICMCommittee, win_statistics  # win_statistics: beside the model, which tracks it
from .registry import METRICS
from .wrappers import SEED, eval_mode

CLASSIFIER_EPOCHS = 15
CLASSIFIER_BATCH = 64
COMMITTEE_CHUNK = 64  # test images per committee pass: every expert and D run on N' x 64 images at once


def classifier_net(resolution: int, channels: int = 1, classes: int = 10) -> nn.Sequential:
    """A small CNN digit classifier: two (3x3 conv, ReLU, 2x2 max-pool) stages of 32 and 64 filters, FC 128, FC
    classes. (B, C, R, R) -> (B, classes) logits."""
    side = resolution // 4
    return nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, classes))


def train_classifier(x: torch.Tensor, y: torch.Tensor, *, epochs: int = CLASSIFIER_EPOCHS,
                     batch_size: int = CLASSIFIER_BATCH, seed: int = SEED, device: torch.device | str = "cpu",
                     progress: bool = True) -> nn.Module:
    """Fit classifier_net on images x (N, C, R, R) with labels y (N,): Adam at default settings, shuffled
    minibatches; initialisation and order are functions of `seed` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = classifier_net(x.shape[-1], x.shape[1], int(y.max()) + 1).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters())
    net.train()
    for _ in tqdm(range(epochs), desc="icm classifier", unit="epoch", disable=not progress, leave=False):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            loss = F.cross_entropy(net(x.index_select(0, idx).to(device)), y.index_select(0, idx).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, *, batch_size: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N,) predicted classes of images x (N, C, R, R), on the CPU."""
    return torch.cat([net(x[s:s + batch_size].to(device)).argmax(1).cpu() for s in range(0, len(x), batch_size)])


def per_group_accuracy(pred: torch.Tensor, truth: torch.Tensor, group: torch.Tensor, groups: int) -> list[float]:
    """Accuracy within each group 0..groups-1 (NaN for an empty group)."""
    hit = (pred == truth).double()
    return [float(hit[group == g].mean()) if bool((group == g).any()) else float("nan") for g in range(groups)]


@METRICS.register("icm")
def icm_metric(*, model: ICMCommittee, dataset: GroundTruthDataset, split: Split, n: int, loss: str,
               device: torch.device | str = "cpu", batch_size: int = 256) -> dict[str, Any]:
    """Win proportions and the downstream classifier on every held-out test digit under every mechanism.

    win_proportion[m][j]: the share of mechanism m's test images whose highest-scoring expert is j (004 Fig. 5),
    with min_winner_share, distinct_winners, spare_share (win_statistics). A small CNN is trained on untransformed
    training digits (a fixed seed); accuracy_ceiling is its accuracy on the untransformed test digits,
    accuracy_before on the transformed ones and accuracy_after on the winning experts' outputs (004 Fig. 6), each
    also per mechanism. The test set is the dataset's own held-out digits (never in training); `n` is not used.
    """
    if not hasattr(model, "compete"):  # the committee, or a stand-in with its compete() (tests)
        raise SpecError("evaluate.metrics", f"metric 'icm' evaluates the ICM committee (model kind icm); got "
                                            f"{type(model).__name__}")
    if not hasattr(dataset, "test_set"):
        raise SpecError("data.name", f"metric 'icm' needs transformed digits with held-out originals (data.name: "
                                     f"icm_digits); got {type(dataset).__name__}")
    test = dataset.test_set()
    num_mech, experts = len(MECHANISM_NAMES), model.num_experts
    winners, outputs = [], []
    with eval_mode(model):
        chunk = min(batch_size, COMMITTEE_CHUNK)
        for s in tqdm(range(0, len(test.transformed), chunk), desc="icm committee", unit="batch", leave=False):
            w, out, _ = model.compete(test.transformed[s:s + chunk].to(device))
            winners.append(w.cpu())
            outputs.append(out.float().cpu())
    winner, inverted = torch.cat(winners), torch.cat(outputs)
    counts = torch.bincount(test.mechanism * experts + winner, minlength=num_mech * experts).view(num_mech, experts)
    p = (counts.double() / counts.sum(1, keepdim=True).clamp_min(1)).numpy()

    x_train, y_train = dataset.classifier_set("train")
    net = train_classifier(x_train, y_train, device=device)
    x_test, y_test = dataset.classifier_set("test")
    before = predict(net, test.transformed, device=device)
    after = predict(net, inverted, device=device)
    out: dict[str, Any] = {
        "win_proportion": [[float(v) for v in row] for row in p],
        "win_proportion_rows": list(MECHANISM_NAMES),
        "win_proportion_cols": [str(j) for j in range(experts)],
        **win_statistics(p),
        "accuracy_ceiling": float((predict(net, x_test, device=device) == y_test).double().mean()),
        "accuracy_before": float((before == test.digit).double().mean()),
        "accuracy_after": float((after == test.digit).double().mean()),
        "accuracy_before_per_mechanism": per_group_accuracy(before, test.digit, test.mechanism, num_mech),
        "accuracy_after_per_mechanism": per_group_accuracy(after, test.digit, test.mechanism, num_mech),
        "icm_test_images": int(len(test.transformed)),
    }
    return out
