"""The ICM committee (004 Algorithm 1): identity initialisation, winner assignment, winners-only updates,
mechanism-level do(), batch-norm statistics shared between scoring and training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from causalrep.build import build_dataset, build_graph, build_model, build_split
from causalrep.data.icm import ICMDigits
from causalrep.graph.kinds import experts_graph
from causalrep.models.base import LatentModel
from causalrep.models.icm import ICMCommittee, assign_winners
from causalrep.nn.experts import Expert
from causalrep.spec import load_spec
from causalrep.spec.schema import ExpertsGraphSpec
from causalrep.train import Trainer
from causalrep.train.distributed import NullTracker

from conftest import TINY, fit_context


def committee(n: int = 4, *, resolution: int = 16, **kw) -> ICMCommittee:
    kw = {"expert_layers": 2, "expert_channels": 8, "discriminator_channels": ((4,), (8,)),
          "discriminator_hidden": 16, **kw}
    graph = experts_graph(ExpertsGraphSpec(experts=n), latent_dim=None)
    return ICMCommittee(graph=graph, in_channels=1, resolution=resolution, **kw)


class StubD(nn.Module):
    """A discriminator with hand-made logits for the N' x B expert outputs of the scoring pass (and for those same
    images when they come again); any other image (the winners' recomputed outputs, the canonical batch) gets
    logit w * mean pixel, so gradients still flow to the experts and to w."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits.flatten()  # (N' * B,), expert-major like the scoring pass
        self.w = nn.Parameter(torch.ones(()))
        self.fakes: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x.flatten(1).mean(1) * self.w
        if len(x) == len(self.logits):  # the scoring pass
            self.fakes = x.detach().flatten(1)
            return self.logits + 0 * base
        known = [int(i) for r in x.detach().flatten(1) for i in torch.nonzero((self.fakes == r).all(1))[:1]] \
            if x.requires_grad is False and self.fakes is not None else []
        if len(known) == len(x):  # the scored outputs again (detached): their hand-made logits
            return self.logits[torch.tensor(known)] + 0 * base
        return base


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# scores c_j of 4 experts (rows) on 4 images (columns), chosen by hand; column 3 ties experts 0, 1, 2
SCORES = [[0.9, 0.1, 0.2, 0.5],
          [0.3, 0.8, 0.2, 0.5],
          [0.1, 0.1, 0.7, 0.5],
          [0.05, 0.05, 0.05, 0.05]]
WINNERS = [0, 1, 2, 0]  # argmax per column, the tie to the lowest index; expert 3 wins nothing


def stubbed(fakes: str = "all", winner_forward: str = "full") -> ICMCommittee:
    model = committee(4, discriminator_fakes=fakes, winner_forward=winner_forward)
    model.discriminator = StubD(torch.tensor([[logit(p) for p in row] for row in SCORES]))
    return model


def test_winner_assignment_on_a_hand_made_score_matrix():
    assert assign_winners(torch.tensor(SCORES)).tolist() == WINNERS
    model = stubbed()
    out = model(torch.rand(4, 1, 16, 16), canonical=torch.zeros(4, 1, 16, 16))
    assert out.winner.tolist() == WINNERS
    assert float(out.distinct_winners) == 3
    assert float(out.score_winner) == pytest.approx((0.9 + 0.8 + 0.7 + 0.5) / 4, abs=1e-6)


@pytest.mark.parametrize("fakes", ["all", "winners"])
def test_discriminator_loss_of_algorithm_1(fakes):
    # canonical zeros -> logit 0 -> -log D = log 2; fakes: -log(1 - c) over all N' x B scores (Algorithm 1 line 5,
    # the 1/N' average) or over each image's winner only
    out = stubbed(fakes)(torch.rand(4, 1, 16, 16), canonical=torch.zeros(4, 1, 16, 16))
    if fakes == "all":
        fake = sum(-math.log(1 - p) for row in SCORES for p in row) / 16
    else:
        fake = sum(-math.log(1 - SCORES[w][b]) for b, w in enumerate(WINNERS)) / 4
    assert float(out.aux["discriminator"].detach()) == pytest.approx(math.log(2) + fake, rel=1e-5)


@pytest.mark.parametrize("winner_forward", ["full", "won"])
def test_only_winners_receive_gradients_and_losers_do_not_move(winner_forward):
    model = stubbed(winner_forward=winner_forward)
    experts = [p for e in model.experts for p in e.parameters()]
    opt = torch.optim.Adam(experts)
    before = [[p.detach().clone() for p in e.parameters()] for e in model.experts]
    out = model(torch.rand(4, 1, 16, 16), canonical=torch.zeros(4, 1, 16, 16))
    out.loss.backward(inputs=experts)  # as the trainer does for the main group
    for j, e in enumerate(model.experts):
        grads = [p.grad for p in e.parameters()]
        if j in WINNERS:
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert sum(float(g.abs().sum()) for g in grads) > 0
        else:
            assert all(g is None for g in grads)  # not a zero grad: Adam would still move it by momentum
    opt.step()
    for j, e in enumerate(model.experts):
        same = [torch.equal(a, p) for a, p in zip(before[j], e.parameters())]
        assert all(same) if j not in WINNERS else not all(same)
    # a second step in which expert 3 still loses: Adam's state for the winners must not leak into it
    opt.zero_grad(set_to_none=True)
    model(torch.rand(4, 1, 16, 16), canonical=torch.zeros(4, 1, 16, 16)).loss.backward(inputs=experts)
    opt.step()
    assert all(torch.equal(a, p) for a, p in zip(before[3], model.experts[3].parameters()))


def test_full_winner_forward_counts_each_batch_once_in_the_running_statistics():
    # "full" scores and trains on one training-mode pass: every expert's running statistics move exactly as one
    # nn.BatchNorm2d forward of the transformed batch moves them (no second pass over the same batch)
    torch.manual_seed(0)
    model = committee(3)
    ref = [Expert(channels=8, layers=2) for _ in range(3)]
    for r, e in zip(ref, model.experts):
        r.load_state_dict(e.state_dict())
    x = torch.rand(6, 1, 16, 16)
    model(x, canonical=torch.rand(6, 1, 16, 16))
    for r, e in zip(ref, model.experts):
        r(x)
        for (k, a), b in zip(e.state_dict().items(), r.state_dict().values()):
            assert torch.equal(a, b), k


def test_winners_train_on_the_outputs_that_were_scored():
    # the recomputation of a won subset uses the whole batch's batch-norm statistics: same outputs as scored
    torch.manual_seed(0)
    expert, ref = Expert(channels=8, layers=3), Expert(channels=8, layers=3)
    ref.load_state_dict(expert.state_dict())
    x = torch.rand(16, 1, 16, 16)
    y, stats = expert.forward_batch_stats(x)
    assert torch.equal(y, ref(x))  # a plain training-mode forward of the whole batch
    for a, b in zip(expert.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)  # running statistics updated as nn.BatchNorm2d does
    rows = torch.tensor([2, 5, 11])
    assert torch.allclose(expert(x.index_select(0, rows), stats=stats), y.index_select(0, rows), atol=1e-6)
    # its own statistics would give other outputs: the reason the scoring pass keeps them
    assert not torch.allclose(ref(x.index_select(0, rows)), y.index_select(0, rows), atol=1e-3)


@pytest.fixture
def one_thread():
    """Small convs on a shared 2-core machine: a second torch thread mostly waits (measured 17x slower here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_identity_initialisation_reproduces_inputs_within_its_tolerance(one_thread):
    data = ICMDigits(resolution=16)
    rng = np.random.default_rng(0)
    model = committee(1, expert_layers=3, expert_channels=16, init_iters=500, init_mse=0.002)
    log = model.identity_init(lambda: data.images(data.sample_factors(32, rng)), progress=False)
    assert [r["expert"] for r in log] == [0]
    for r in log:  # 004 appendix B: at most 500 iterations or until the MSE is below 0.002
        assert r["iterations"] <= 500 and r["mse"] < 0.002
    x = data.images(data.sample_factors(64, rng))  # fresh transformed digits
    with torch.no_grad():
        for e in model.experts:  # within the tolerance on new data too (training-mode batch norm, as trained)
            assert float(((e(x) - x) ** 2).mean()) < 0.002 * 1.5


def test_identity_initialisation_stops_at_its_iteration_budget():
    model = committee(1, init_iters=3, init_mse=0.0)  # an MSE below 0 is never reached
    log = model.identity_init(lambda: torch.rand(4, 1, 16, 16), progress=False)
    assert log == [{"expert": 0, "iterations": 3, "mse": pytest.approx(log[0]["mse"])}]
    assert committee(1, init_iters=0).identity_init(lambda: torch.rand(4, 1, 16, 16)) == []


def test_mechanism_level_do_applies_the_chosen_expert():
    model = committee(3).eval()
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        outs = [e(x) for e in model.experts]
    assert torch.equal(model.do(x, {"expert": 1}), outs[1])
    assert torch.equal(model.do(x, {"expert": "expert3"}, on="mechanism"), outs[2])  # node name = index + 1
    per = model.do(x, {"expert": torch.tensor([0, 2, 1, 1, 0])})
    for b, k in enumerate([0, 2, 1, 1, 0]):
        assert torch.equal(per[b], outs[k][b])
    assert torch.equal(model.counterfactual(x, {"expert": 2}), outs[2])
    w, picked, scores = model.compete(x)
    assert scores.shape == (5, 3) and torch.equal(model.encode(x), scores)
    assert torch.equal(w, scores.argmax(1))
    for b in range(5):
        assert torch.equal(picked[b], outs[int(w[b])][b])
    assert float(model.validation_error(x)) == pytest.approx(1 - float(scores.max(1).values.mean()), abs=1e-6)


def test_do_errors_name_what_is_allowed():
    model = committee(3).eval()
    x = torch.rand(2, 1, 16, 16)
    for on in ("value", "noise"):
        with pytest.raises(ValueError, match=rf"on='{on}'.*mechanism-level.*on='mechanism'"):
            model.do(x, {"expert": 0}, on=on)
    with pytest.raises(ValueError, match="on='latent'.*valid: mechanism"):
        model.do(x, {"expert": 0}, on="latent")
    with pytest.raises(KeyError, match=r"takes \{'expert': k\}; got keys \['u1'\]"):
        model.do(x, {"u1": 0})
    with pytest.raises(KeyError, match="unknown expert 'expert9'; experts: expert1, expert2, expert3"):
        model.do(x, {"expert": "expert9"})
    with pytest.raises(ValueError, match=r"expert indices must lie in 0..2; got \[3\]"):
        model.do(x, {"expert": 3})
    with pytest.raises(ValueError, match=r"\(2,\) indices; got shape \(3,\)"):
        model.do(x, {"expert": torch.tensor([0, 1, 2])})
    # not an autoencoder: no decoder, and nothing but the mechanism-level do() is declared (test_contract.py)
    assert not isinstance(model, LatentModel) and not hasattr(model, "decode")
    assert model.supports == {"do_mechanism"} and model.find_unused_parameters
    with pytest.raises(ValueError, match="needs the canonical batch"):
        committee(3)(x)


def test_revival_copies_the_busiest_experts_into_the_inactive_ones():
    torch.manual_seed(0)
    model = committee(4, revive_every=5, revive_below=0.05, revive_noise=0.01)
    opt = torch.optim.Adam([p for e in model.experts for p in e.parameters()])
    x = torch.rand(6, 1, 16, 16)
    sum(e(x).mean() for e in model.experts).backward()
    opt.step()  # every expert has Adam moments
    model.win_counts.copy_(torch.tensor([0.0, 30.0, 2.0, 1.0]))  # shares 0, 0.909, 0.061, 0.030

    logged = []
    model.after_step(fit_context(step=4, optimizer=opt, logged=logged))  # step 4: not a check
    assert model.win_counts.sum() == 33 and not model.revived
    before = {j: {k: v.clone() for k, v in model.experts[j].state_dict().items()} for j in range(4)}
    model.after_step(fit_context(step=5, optimizer=opt, logged=logged))
    # inactive (share < 0.05): expert 0 then 3, least won first; sources: the busiest first, 1 then 2
    assert model.revived == [(5, 0, 1), (5, 3, 2)]
    assert logged == [("revived_expert0", 1, 5, "train"), ("revived_expert3", 2, 5, "train")]
    assert model.win_counts.sum() == 0
    for dead, src in ((0, 1), (3, 2)):
        new = model.experts[dead].state_dict()
        for k, v in before[src].items():
            if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
                assert torch.equal(new[k], v), k  # statistics copied as they are
            else:  # weights: the source's, perturbed by 1 % of their RMS
                rms = float(v.float().pow(2).mean().sqrt())
                assert 0 < float((new[k] - v).abs().max()) <= 6 * 0.01 * rms, k
        for p_dst, p_src in zip(model.experts[dead].parameters(), model.experts[src].parameters()):
            assert torch.equal(opt.state[p_dst]["exp_avg"], opt.state[p_src]["exp_avg"])
            assert opt.state[p_dst]["exp_avg"] is not opt.state[p_src]["exp_avg"]
    for j in (1, 2):  # the sources are untouched
        assert all(torch.equal(a, b) for a, b in zip(before[j].values(), model.experts[j].state_dict().values()))
    # the counts come from training steps: B images per step, each counted for its winner
    model(torch.rand(4, 1, 16, 16), canonical=torch.rand(4, 1, 16, 16))
    assert model.win_counts.sum() == 4


def test_track_metrics_summarise_the_probe_win_matrix_and_track_images_reuse_it():
    model = committee(3)
    x = torch.rand(6, 1, 16, 16)
    model._probe = (x, torch.tensor([0, 0, 0, 1, 1, 1]), ("up", "down"))
    calls = []

    def winners(batch):  # hand-made: "up" -> experts 0, 0, 1; "down" -> 2, 2, 2
        calls.append(len(batch))
        return torch.tensor([0, 0, 1, 2, 2, 2])

    model.winners = winners
    stats = model.track_metrics()
    # matrix [[2/3, 1/3, 0], [0, 0, 1]]: top shares 2/3 and 1; experts 0 and 2 top a mechanism, expert 1 is
    # spare and wins 1/3 of "up" and none of "down": (1/3 + 0) / 2
    assert stats == pytest.approx({"min_winner_share": 2 / 3, "distinct_winners": 2.0, "spare_share": 1 / 6})
    images = model.track_images()
    assert calls == [6]  # the heat map draws the matrix of track_metrics, not a second competition
    assert set(images) == {"win_matrix", "committee"} and model.training
    model.track_images()
    assert calls == [6, 6]  # alone, track_images computes its own


class LinearD(nn.Module):
    """D(x) = <w, x> + b: grad_x D = w for every image, so R1 = ||w||^2 exactly."""

    def __init__(self, side: int = 16):
        super().__init__()
        self.lin = nn.Linear(side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)).squeeze(1)


def test_r1_penalty_is_the_squared_input_gradient_of_a_linear_discriminator():
    torch.manual_seed(0)
    gamma = 2.5
    model, plain = committee(3, discriminator_r1=gamma), committee(3)
    plain.load_state_dict(model.state_dict())
    model.discriminator, plain.discriminator = LinearD(), LinearD()
    plain.discriminator.load_state_dict(model.discriminator.state_dict())
    w = model.discriminator.lin.weight
    x, canonical = torch.rand(5, 1, 16, 16), torch.rand(5, 1, 16, 16)
    out, ref = model(x, canonical=canonical), plain(x, canonical=canonical)
    norm2 = float(w.detach().pow(2).sum())
    assert float(out.r1) == pytest.approx(norm2, rel=1e-5)
    # D's loss gains gamma/2 ||w||^2 (Mescheder et al. 2018 eq. 9) and nothing else changes
    assert float((out.aux["discriminator"] - ref.aux["discriminator"]).detach()) == pytest.approx(gamma / 2 * norm2, rel=1e-4)
    assert float(out.loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=1e-6)
    # its gradient on w is gamma * w: the penalty trains D (create_graph) and reaches no expert
    g_pen, = torch.autograd.grad(out.aux["discriminator"], w, retain_graph=True)
    g_ref, = torch.autograd.grad(ref.aux["discriminator"], plain.discriminator.lin.weight)
    assert torch.allclose(g_pen - g_ref, gamma * w.detach(), atol=1e-5)
    experts = [p for e in model.experts for p in e.parameters()]
    assert all(g is None for g in torch.autograd.grad(out.aux["discriminator"], experts, allow_unused=True))
    assert "r1" not in ref and plain.discriminator_r1 == 0.0
    with pytest.raises(ValueError, match="discriminator_r1"):
        committee(3, discriminator_r1=-1.0)


def test_assignment_stability_is_the_share_of_probe_images_keeping_their_winner():
    model = committee(3)
    model._probe = (torch.rand(6, 1, 16, 16), torch.tensor([0, 0, 0, 1, 1, 1]), ("up", "down"))
    rounds = iter([torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0]),
                   torch.tensor([0, 1, 1, 2, 2, 0])])
    model.winners = lambda batch: next(rounds)
    first = model.track_metrics()
    assert "assignment_stability" not in first  # nothing to compare with at the first check
    assert model.track_metrics()["assignment_stability"] == pytest.approx(4 / 6)  # images 1 and 5 moved
    assert model.track_metrics()["assignment_stability"] == 1.0


def test_convergence_criterion_counts_stable_checks_after_the_last_revival():
    # 004 sec 3 item 2b: stop once assignments hold; here >= 0.95 at 3 validation steps in a row after step 100
    model = committee(3, revive_every=50, revive_until=100, stop_stability=0.95, stop_checks=3)
    verdicts = []
    for step, stability in [(50, 1.0), (100, 1.0), (150, 0.97), (200, 0.94), (250, 0.96), (300, 0.99),
                            (350, 0.95)]:
        model._stability = stability
        verdicts.append(model.should_stop(fit_context(step=step, val_every=50)))
    # steps 50 and 100 still revive (not counted); 200 breaks the streak; 250, 300, 350 complete it
    assert verdicts[:-1] == [None] * 6 and verdicts[-1].startswith("converged")
    assert verdicts[-1].endswith("(50 steps apart; 004 sec 3 item 2b)")
    assert committee(3).should_stop(fit_context(step=10 ** 6)) is None  # off by default
    with pytest.raises(ValueError, match="stop_stability"):
        committee(3, stop_stability=1.5)


# -- the scores that pick the winners, in float32 (004 sec 3.2, Algorithm 1 line 6) -------------------------------
BF16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731  (the trainer's bf16 autocast on CPU)


def near_tied_committee(score_precision: str) -> ICMCommittee:
    """Three distinct experts whose outputs D scores almost alike, as an untrained D does at the start (~4e-5
    apart on 004's digits): D's output layer is scaled by 1e-2 and centred at logit 0.375, so the float32 logits
    differ by ~1e-5 while bf16 (spacing 2^-10 between 0.25 and 0.5) rounds them all to 0.375."""
    torch.manual_seed(0)
    model = committee(3, score_precision=score_precision)
    last = model.discriminator.head[-1]
    with torch.no_grad():
        last.weight.mul_(1e-2)
        last.bias.zero_()
        last.bias.fill_(0.375 - float(model.discriminator(torch.rand(8, 1, 16, 16)).mean()))
    return model


def scoring_logits(model: ICMCommittee, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 logits, bf16-autocast logits), each (N', B), of the experts' outputs on x as the committee
    computes them under bf16 autocast (the experts themselves in bf16), in the model's current mode."""
    with torch.no_grad():
        with BF16():
            outs = model.expert_outputs(x).flatten(0, 1)
            rounded = model.discriminator(outs).float().view(model.num_experts, len(x))
        exact = model.discriminator(outs.float()).view(model.num_experts, len(x))
    assert exact.dtype == torch.float32 and outs.dtype == torch.bfloat16
    return exact, rounded


@pytest.mark.parametrize("score_precision", ["fp32", "autocast"])
def test_bf16_autocast_ties_the_scores_unless_they_are_computed_in_fp32(score_precision, one_thread):
    model = near_tied_committee(score_precision)
    x, canonical = torch.rand(12, 1, 16, 16), torch.rand(12, 1, 16, 16)
    exact, rounded = scoring_logits(model, x)  # training mode: forward() scores with the batch's statistics
    spread = exact.max(0).values - exact.min(0).values
    assert bool((spread > 1e-6).all() and (spread < 1e-4).all())  # the experts' scores differ by ~1e-5 ...
    assert bool((rounded == rounded[0]).all())  # ... which bf16 rounds away: every image a tie
    top2 = exact.topk(2, dim=0).values
    assert bool((top2[0] - top2[1] > 1e-7).all())  # no float32 near-tie: the argmax is well defined
    fp32_winners = exact.argmax(0).tolist()
    assert len(set(fp32_winners)) > 1  # the float32 argmax spreads the images over the experts
    with BF16():
        out = model(x, canonical=canonical)
    expected = fp32_winners if score_precision == "fp32" else [0] * len(x)  # a tie goes to expert 0
    assert out.winner.tolist() == expected
    assert out.score_winner.dtype == torch.float32
    # evaluation (compete / winners / encode) scores the same way, with the running statistics
    model.eval()
    exact, rounded = scoring_logits(model, x)
    assert bool((rounded == rounded[0]).all()) and len(set(exact.argmax(0).tolist())) > 1
    with BF16():
        winner, _, scores = model.compete(x)
    assert winner.tolist() == (exact.argmax(0).tolist() if score_precision == "fp32" else [0] * len(x))
    assert scores.dtype == torch.float32
    if score_precision == "fp32":
        assert torch.equal(scores, torch.sigmoid(exact).T)  # the very float32 logits computed above


# -- a tiny spec trained twice in one process: bitwise the same ---------------------------------------------------
def tiny_icm_data(model: dict | None = None, train: dict | None = None) -> dict:
    """Plain spec data of a CPU-sized ICM run (specs/icm_digits.yaml shrunk): 3 experts at 16x16, revival on."""
    return {**TINY, "name": "tiny_icm", "data": {"name": "icm_digits", "resolution": 16, "split": [0.8, 0.1, 0.1]},
            "graph": {"kind": "experts", "experts": 3},
            "model": {"kind": "icm", "expert_layers": 1, "expert_channels": 4, "discriminator_channels": [[4], [8]],
                      "discriminator_hidden": 16, "discriminator_r1": 1.0, "init_iters": 3, "revive_every": 4,
                      "revive_below": 0.4, **(model or {})},
            "train": {"steps": 6, "batch_size": 8, "log_every": 1, "val_every": 3, "checkpoint_every": 10 ** 6,
                      "device": "cpu", "threads": 1, **(train or {})},
            "evaluate": {**TINY["evaluate"], "metrics": ["icm"]}}


def test_score_precision_comes_from_the_spec_and_is_checked():
    spec = load_spec(data=tiny_icm_data())
    assert spec.model.score_precision == "fp32"  # the default: winners from float32 scores
    assert build_model(spec).score_precision == "fp32"
    spec = load_spec(data=tiny_icm_data(model={"score_precision": "autocast"}))
    assert build_model(spec).score_precision == "autocast"
    with pytest.raises(ValueError, match="score_precision"):
        committee(3, score_precision="bf16")


class RecordingTracker(NullTracker):
    def __init__(self):
        self.logged: list[tuple[str, str, float]] = []

    def log_metric(self, name, value, step=None, context=None):
        self.logged.append((name, context, float(value)))


def train_tiny_icm(run_dir, precision: str, tracker=None) -> ICMCommittee:
    """Build and fit the tiny spec as an Experiment does (seeded split, model and data stream), no evaluation."""
    spec = load_spec(data=tiny_icm_data(train={"precision": precision}))
    dataset = build_dataset(spec)
    split = build_split(spec, dataset)
    model = build_model(spec, dataset, build_graph(spec, dataset.true_graph))
    t = spec.train
    Trainer(model=model, dataset=dataset, split=split, run_dir=run_dir, tracker=tracker or NullTracker(),
            steps=t.steps,
            batch_size=t.batch_size, lr=t.lr, betas=t.betas, precision=t.precision, device=t.device,
            checkpoint_every=t.checkpoint_every, log_every=t.log_every, val_every=t.val_every,
            val_samples=spec.evaluate.val_samples, seed=spec.seed, progress=False).fit()
    return model


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: specs/icm_digits.yaml's CPU setting
def test_training_a_tiny_spec_twice_gives_bitwise_identical_weights_and_win_counts(tmp_path, precision,
                                                                                   one_thread):
    a = train_tiny_icm(tmp_path / "a", precision)
    b = train_tiny_icm(tmp_path / "b", precision)
    assert a.init_log == b.init_log and len(a.init_log) == 3
    assert a.revived == b.revived and a.revived  # revival (random perturbations) ran, the same way
    assert a.win_counts.sum() == 2 * 8  # steps 5 and 6 since the check at step 4, 8 images each
    assert torch.equal(a.win_counts, b.win_counts)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(a._probe_last, b._probe_last)  # the probe's winners at the last validation step


def test_the_committee_score_is_logged_under_its_own_name(tmp_path, one_thread):
    """The trainer logs validation_error under the model's validation_metric: the committee's 1 - E[max_j c_j]
    (004 eq. 2 as an error) is committee_error[val], not a reconstruction error; an autoencoder keeps recon_error."""
    tracker = RecordingTracker()
    model = train_tiny_icm(tmp_path, "fp32", tracker)
    val = [(name, v) for name, context, v in tracker.logged if context == "val" and name.endswith("_error")]
    assert [name for name, _ in val] == ["committee_error", "committee_error"]  # val_every 3 of 6 steps
    assert not any(name == "recon_error" for name, _, _ in tracker.logged)
    assert 0.0 <= val[-1][1] <= 1.0
    assert LatentModel.validation_metric == "recon_error" and model.validation_metric == "committee_error"
