"""The ICM committee (Parascandolo et al. 2018; 004 sec 3-4, Algorithm 1): competing experts, one discriminator."""
from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from ..errors import SpecError
from ..figures import matrix_heatmap
from ..graph.latent import LatentGraph
from ..nn.experts import Discriminator, Expert
from ..spec.schema import ExpertsGraphSpec, ICMSpec, Spec
from ._spec_args import graph_of_kind
from .trainable import BuildContext, FitContext, ModelOutput, Trainable, register_model

PROBE_IMAGES = 300  # validation images whose win matrix track_images() draws over training
# metrics that decode latents (the committee maps images to images and has no decoder)
DECODING_METRICS = ("reconstruction", "fid")


def win_statistics(p: np.ndarray) -> dict[str, Any]:
    """Summary of an (M, N') win-proportion matrix (rows: mechanisms, each summing to 1; cols: experts).

    min_winner_share: min over mechanisms of the share won by that mechanism's top expert;
    distinct_winners: how many different experts top some mechanism (N' = M = 10 and one expert per mechanism: 10);
    top_expert: each mechanism's top expert; spare_experts: the experts that top no mechanism;
    spare_share: the share of all test images (mechanisms weighted equally) that the spare experts win;
    one_to_one: 1.0 when every mechanism has its own top expert, 004 sec 4's success ("the experts correctly
    specialized on inverting exactly one mechanism each in 7 out of the 10 runs"), else 0.0; its mean over
    seeds is the success rate.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or not p.size:
        raise ValueError(f"win_statistics: expected a non-empty (mechanisms, experts) matrix, got shape {p.shape}")
    top = p.argmax(1)
    spare = sorted(set(range(p.shape[1])) - set(top.tolist()))
    return {"min_winner_share": float(p.max(1).min()), "distinct_winners": int(len(set(top.tolist()))),
            "top_expert": [int(t) for t in top], "spare_experts": spare,
            "spare_share": float(p[:, spare].sum(1).mean()) if spare else 0.0,
            "one_to_one": float(len(set(top.tolist())) == p.shape[0])}


def assign_winners(scores: torch.Tensor) -> torch.Tensor:
    """Each sample's winning expert j* = argmax_j c_j (004 sec 3.2): (N', B) scores or logits -> (B,) int64.
    Ties go to the lowest expert index."""
    return scores.argmax(0)


def _drop_latent_bank(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: checkpoints written while the committee was a LatentModel carry its unused
    latent_bank buffers; they are dropped, so those runs still load (strictly)."""
    for key in (prefix + "latent_bank", prefix + "latent_bank_filled"):
        state_dict.pop(key, None)


@register_model("icm")
class ICMCommittee(Trainable):
    """N' experts E_j (one per node of an `experts` graph) compete for transformed images x' (004 sec 3.2).

    Training step (004 Algorithm 1, one "iteration"; forward(x', canonical=x) with the trainer's two optimisers):
      line 4: every expert maps the whole transformed batch, c_j = D(E_j(x')) scores each output (in float32 with
              autocast off by default, score_precision: bf16 would tie the near-equal scores of early training);
      line 6: sample b goes to j* = argmax_j c_j and only the winners are trained, to maximise log D(E_j*(x'_b))
              (the non-saturating GAN loss; `loss`);
      line 5: D is trained (aux group "discriminator", its own Adam) on the canonical batch x against the experts'
              outputs: all of them weighted 1/N' (Algorithm 1 and eq. 3; sec 4: "we punish the losing experts by
              training the discriminator against their outputs as well") or, with fakes="winners", the winners'.
    Losers must not move at all: an expert whose gradient were zero would still be moved by Adam's momentum, so
    an expert that won nothing must never enter the generator loss's graph (its .grad stays None and Adam skips
    it). winner_forward="full" (default, 004's setting) runs every expert on the whole batch with grad, so batch
    norm normalises with, and back-propagates through, the statistics of the whole transformed batch, and takes
    each winner's loss on its won images (the losers' outputs are scored detached: no gradient path reaches
    them); "won" scores without grad and recomputes only the won images, normalised with the statistics kept
    from the scoring pass (Expert.forward_batch_stats): the same outputs, no gradient through the statistics,
    and one expert-batch of backward instead of one per winner. Either way the running statistics used at evaluation are those of
    whole mixed batches.

    The committee is not an autoencoder (a Trainable, not a LatentModel; supports only do_mechanism): encode(x) is the (B, N') matrix of D's scores
    c_j of every expert's output, one latent dim per expert node (how canonical each expert makes x look);
    there is no decoder from it. Interventions are mechanism-level: do(x, {"expert": k}, on="mechanism") applies
    expert k instead of the committee's choice (the selected inverse mechanism is the intervened variable).
    """

    supports = frozenset({"do_mechanism"})
    batch_keys = ("canonical",)
    # an expert that won no image of a step is not in that step's graph (Algorithm 1: losers are not trained)
    find_unused_parameters = True
    validation_metric = "committee_error"  # 1 - E[max_j c_j] on validation digits, not a reconstruction error

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "ICMCommittee":
        """N' experts (graph kind experts) and a discriminator, trained by competition (004 Algorithm 1)."""
        m: ICMSpec = spec.model
        g = graph_of_kind(spec, ExpertsGraphSpec, "needs `graph: {kind: experts, experts: N}` (one node per expert)")
        if g.assignment != "wta":
            raise SpecError("graph.assignment", f"model 'icm' assigns each image to its highest-scoring expert "
                                                f"(004 Algorithm 1): needs 'wta', got {g.assignment!r}")
        for i, name in enumerate(spec.evaluate.metrics):
            if name in DECODING_METRICS:
                raise SpecError(f"evaluate.metrics[{i}]", f"metric {name!r} decodes latents, which the ICM "
                                                          f"committee does not have; use metric 'icm'")
        stages = len(m.discriminator_channels)
        if not stages or any(not s for s in m.discriminator_channels) or spec.data.resolution % 2 ** stages:
            raise SpecError("model.discriminator_channels", f"{[list(s) for s in m.discriminator_channels]}: needs "
                                                            f"non-empty stages whose 2x2 poolings ({stages}) divide "
                                                            f"data.resolution={spec.data.resolution}")
        return cls(graph=graph, in_channels=ctx.channels, resolution=spec.data.resolution,
                   expert_layers=m.expert_layers, expert_channels=m.expert_channels,
                   discriminator_channels=m.discriminator_channels, discriminator_hidden=m.discriminator_hidden,
                   discriminator_lr=m.discriminator_lr, discriminator_r1=m.discriminator_r1,
                   discriminator_fakes=m.discriminator_fakes, score_precision=m.score_precision,
                   winner_forward=m.winner_forward, init_iters=m.init_iters, init_mse=m.init_mse,
                   revive_every=m.revive_every, revive_below=m.revive_below, revive_until=m.revive_until,
                   revive_noise=m.revive_noise, stop_stability=m.stop_stability, stop_checks=m.stop_checks)

    def __init__(self, *, graph: LatentGraph, in_channels: int = 1, resolution: int = 32, expert_layers: int = 7,
                 expert_channels: int = 32,
                 discriminator_channels: Sequence[Sequence[int]] = ((16, 16, 16), (32, 32), (64, 64)),
                 discriminator_hidden: int = 1024, discriminator_lr: float | None = None, discriminator_r1: float = 0.0,
                 discriminator_fakes: str = "all", score_precision: str = "fp32", winner_forward: str = "full",
                 init_iters: int = 500, init_mse: float = 0.002, revive_every: int = 0, revive_below: float = 0.01,
                 revive_until: int | None = None, revive_noise: float = 0.01, stop_stability: float | None = None,
                 stop_checks: int = 3):
        if graph.kind != "experts":
            raise ValueError(f"ICMCommittee needs an experts graph (one node per expert); got kind {graph.kind!r}")
        if discriminator_fakes not in ("all", "winners"):
            raise ValueError(f"discriminator_fakes: expected 'all' or 'winners', got {discriminator_fakes!r}")
        super().__init__(graph=graph)
        self.register_load_state_dict_pre_hook(_drop_latent_bank)
        self.num_experts = len(graph.nodes)
        self.experts = nn.ModuleList(Expert(in_channels=in_channels, channels=expert_channels, layers=expert_layers)
                                     for _ in range(self.num_experts))
        self.discriminator = Discriminator(in_channels=in_channels, resolution=resolution,
                                           stages=discriminator_channels, hidden=discriminator_hidden)
        self.discriminator_lr = discriminator_lr
        if discriminator_r1 < 0:
            raise ValueError(f"discriminator_r1: expected a non-negative weight, got {discriminator_r1}")
        self.discriminator_r1 = float(discriminator_r1)
        self.discriminator_fakes = discriminator_fakes
        if score_precision not in ("fp32", "autocast"):
            raise ValueError(f"score_precision: expected 'fp32' or 'autocast', got {score_precision!r}")
        self.score_precision = score_precision
        if winner_forward not in ("full", "won"):
            raise ValueError(f"winner_forward: expected 'full' or 'won', got {winner_forward!r}")
        self.winner_forward = winner_forward
        self.init_iters, self.init_mse = init_iters, init_mse
        self.init_log: list[dict[str, float]] = []  # the identity initialisation's iterations and MSE per expert
        self.revive_every, self.revive_below = revive_every, revive_below
        self.revive_until, self.revive_noise = revive_until, revive_noise
        # images each expert won since the last revival check (a buffer: checkpointed, so resume is exact)
        self.register_buffer("win_counts", torch.zeros(self.num_experts))
        if stop_stability is not None and not 0 < stop_stability <= 1:
            raise ValueError(f"stop_stability: expected a share in (0, 1] or None, got {stop_stability}")
        if stop_checks < 1:
            raise ValueError(f"stop_checks: expected a positive int, got {stop_checks}")
        self.stop_stability, self.stop_checks = stop_stability, stop_checks
        self._stable_checks = 0  # consecutive validation steps (after the last revival) at >= stop_stability
        self._stability: float | None = None  # the probe's assignment_stability at the last validation step
        self.revived: list[tuple[int, int, int]] = []  # (step, revived expert, its source) of this process
        self._probe: tuple[torch.Tensor, torch.Tensor, tuple[str, ...]] | None = None
        self._probe_matrix: torch.Tensor | None = None  # track_metrics' matrix, drawn by track_images
        self._probe_last: torch.Tensor | None = None  # the probe's winners at the last validation step

    # -- the committee ------------------------------------------------------------------------------------------
    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every image: (B, C, H, W) -> (N', B, C, H, W) in [0, 1]."""
        return torch.stack([e(x) for e in self.experts])

    def score_logits(self, images: torch.Tensor) -> torch.Tensor:
        """D's logits (float32) of the images whose scores c_j = D(E_j(x')) pick the winners, (M, C, H, W) -> (M,).

        004 sec 3.2 / Algorithm 1 line 6: each image goes to j* = argmax_j c_j. With score_precision "fp32" this
        pass runs with autocast off on float32 inputs: at initialisation the experts' scores differ by ~4e-5,
        below bf16's resolution, so under the trainer's bf16 autocast most images would tie and argmax would send
        them all to expert 0 (a later .float() cannot undo rounding that happened inside D). "autocast": the
        ambient precision (the old behaviour, an ablation)."""
        if self.score_precision == "autocast":
            return self.discriminator(images).float()
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.discriminator(images.float()).float()

    def _scored(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs (N', B, C, H, W), D's logits (N', B)) of every expert's output."""
        outs = self.expert_outputs(x)
        logits = self.score_logits(outs.flatten(0, 1)).view(self.num_experts, len(x))
        return outs, logits

    @torch.no_grad()
    def compete(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The competition on images x (B, C, H, W): (winner (B,) int64, the winners' outputs (B, C, H, W),
        scores c (B, N')). Ties go to the lowest expert index (argmax)."""
        outs, logits = self._scored(x)
        winner = assign_winners(logits)  # (B,)
        picked = outs.gather(0, winner.view(1, -1, 1, 1, 1).expand(1, *outs.shape[1:])).squeeze(0)
        return winner, picked, torch.sigmoid(logits).T

    def winners(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) index of the expert whose output D scores highest."""
        return self.compete(x)[0]

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """The committee's estimate of the canonical images: each image through its winning expert (004 Fig. 3)."""
        return self.compete(x)[1]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N') scores c_j = D(E_j(x)) in (0, 1): the committee's view of x (latent dim j = node expert{j+1})."""
        return self.compete(x)[2]

    def validation_error(self, x: torch.Tensor) -> torch.Tensor:
        """1 - E_x'[max_j c(E_j(x'))]: the committee objective of 004 eq. 2 on held-out images, as an error
        (0 when every image's winner fully convinces the current discriminator)."""
        return 1.0 - self.compete(x)[2].max(1).values.mean()

    # -- training (004 Algorithm 1) -----------------------------------------------------------------------------
    def aux_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(self.discriminator.parameters())}

    def aux_optimizer_options(self, name: str, *, lr: float, betas: tuple[float, float]) -> dict:
        if name == "discriminator" and self.discriminator_lr is not None:
            return {"lr": self.discriminator_lr, "betas": betas}
        return super().aux_optimizer_options(name, lr=lr, betas=betas)

    def forward(self, x: torch.Tensor, canonical: torch.Tensor | None = None) -> ModelOutput:
        """x: (B, C, H, W) transformed batch x'; canonical: (B', C, H, W) canonical batch x, drawn independently
        (Algorithm 1 line 3). loss: the winners' generator loss; aux["discriminator"]: D's loss; winner: (B,) the
        experts the images went to (not logged: the trainer logs scalar terms only)."""
        if canonical is None:
            raise ValueError("ICMCommittee.forward needs the canonical batch (model.batch_keys = ('canonical',)); "
                             "the trainer draws it with dataset.batch_extra('canonical', ...)")
        n, b = self.num_experts, len(x)
        train_experts = torch.is_grad_enabled() and self.winner_forward == "full"
        # line 4: every expert on the whole batch. "full": one training-mode pass with grad (batch norm normalises
        # with, and back-propagates through, the statistics of the whole transformed batch, as in 004); a loser's
        # outputs never enter the generator loss, so autograd never reaches it (its .grad stays None). "won":
        # without grad, each expert keeping its batch-norm statistics for the recomputation of its won images
        if train_experts:
            outs = [e(x) for e in self.experts]
            scored = None
        else:
            scored = [e.forward_batch_stats(x) for e in self.experts]  # N' x ((B, C, H, W), stats)
            outs = [out for out, _ in scored]
        fakes = torch.stack(outs).detach().flatten(0, 1)  # (N' * B, C, H, W), expert-major
        every = self.discriminator_fakes == "all"  # D trains on every output: keep the graph of this pass
        with torch.set_grad_enabled(every and torch.is_grad_enabled()):
            # logit c_j, in score_precision (fp32 by default: 004 sec 3.2 / Algorithm 1 line 6's argmax must not
            # see bf16 ties); grad reaches D only. With fakes "all" the same fp32 logits train D (line 5)
            fake_logits = self.score_logits(fakes).view(n, b)
        winner = assign_winners(fake_logits.detach())  # (B,) j* = argmax_j c_j
        # line 6: each winner's loss is taken on the images it won; experts that won nothing stay out of the
        # graph. "won" recomputes only those images, normalised with the statistics kept from the scoring pass
        # (same outputs, no gradient through the statistics, 1/N' of the backward cost)
        won = {j: torch.nonzero(winner == j).squeeze(1) for j in torch.unique(winner).tolist()}  # one host sync
        if self.training and torch.is_grad_enabled():
            self.win_counts += torch.bincount(winner, minlength=n).to(self.win_counts.dtype)
        if scored is None:
            picked = torch.cat([outs[j].index_select(0, rows) for j, rows in won.items()])
        else:
            picked = torch.cat([self.experts[j](x.index_select(0, rows), stats=scored[j][1])
                                for j, rows in won.items()])
        g_logits = self.discriminator(picked).float()
        generator = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits), reduction="sum") / b
        # line 5: D on canonical x (label 1) against the experts' outputs (label 0), inputs detached
        penalise = self.discriminator_r1 > 0 and torch.is_grad_enabled()
        if penalise:
            canonical = canonical.detach().requires_grad_(True)
        real_logits = self.discriminator(canonical).float()
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        terms = {}
        if penalise:
            r1 = self.r1_penalty(canonical, real_logits)
            real = real + 0.5 * self.discriminator_r1 * r1
            terms["r1"] = r1.detach()
        if every:  # mean over N' x B = 1/N' sum_j E_b[-log(1 - c_j)]
            against = fake_logits
        else:  # the winners' outputs only, through D again (B images) now that they are known
            against = self.discriminator(fakes.index_select(0, winner * b + torch.arange(b, device=winner.device)))
        fake = F.binary_cross_entropy_with_logits(against.float(), torch.zeros_like(against.float()))
        return ModelOutput(loss=generator, generator=generator,
                           score_winner=torch.sigmoid(fake_logits.detach().max(0).values).mean(),
                           score_real=torch.sigmoid(real_logits.detach()).mean(),
                           distinct_winners=torch.tensor(float(len(won)), device=x.device),
                           winner=winner, aux={"discriminator": real + fake}, **terms)

    @staticmethod
    def r1_penalty(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """R1 = E_x ||grad_x D(x)||^2 over the canonical batch (Mescheder et al. 2018, eq. 9: the penalty on real
        data only, gamma/2 R1 added to D's loss), D being the logit. x must require grad and logits = D(x); the
        gradient is kept in the graph (create_graph) so that the penalty trains D. -> scalar."""
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        return grad.float().pow(2).flatten(1).sum(1).mean()

    def on_fit_start(self, ctx: FitContext) -> None:
        """A probe of validation images for the win matrix drawn over training (track_images), also on resume."""
        self._set_probe(ctx.dataset, ctx.val_index, ctx.device)

    def before_fit(self, ctx: FitContext) -> None:
        """The approximate-identity initialisation (004 sec 4, appendix B) on the trainer's transformed batches
        (a fresh run only: a resumed run continues from its checkpointed experts), in the trainer's precision."""
        self.identity_init(ctx.next_batch, log=ctx.log_metric, progress=ctx.progress, autocast=ctx.autocast)

    def identity_init(self, next_batch, *, log=None, progress: bool = True,
                      autocast=contextlib.nullcontext) -> list[dict[str, float]]:
        """Train each expert alone to reproduce its input, on batches from next_batch() (transformed data), for at
        most init_iters steps or until the batch MSE falls below init_mse (004 appendix B: 500 and 0.002), with
        its own Adam at default settings (004 sec 4). autocast: a context factory for the expert's forward (the
        trainer's precision; the batches are drawn outside it); log: FitContext.log_metric's signature. Returns
        and logs {expert, iterations, mse} per expert."""
        self.init_log = []
        if self.init_iters == 0:
            return self.init_log
        was_training = self.training
        self.train()
        bar = tqdm(self.experts, desc="identity init", disable=not progress, dynamic_ncols=True)
        for j, expert in enumerate(bar):
            opt = torch.optim.Adam(expert.parameters())
            mse = float("nan")
            for it in range(1, self.init_iters + 1):
                x = next_batch()
                with autocast():
                    y = expert(x)
                loss = F.mse_loss(y.float(), x.float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                mse = float(loss.detach())
                if mse < self.init_mse:
                    break
            self.init_log.append({"expert": j, "iterations": it, "mse": mse})
            bar.set_postfix(expert=j, iterations=it, mse=f"{mse:.4g}")
            if log is not None:
                log(f"init_iterations_expert{j}", it, step=0, context="init")
                log(f"init_mse_expert{j}", mse, step=0, context="init")
        self.train(was_training)
        return self.init_log

    # -- experts added during training (004 sec 3, item 1) -----------------------------------------------------
    def after_step(self, ctx: FitContext) -> None:
        """With revive_every > 0, every revive_every steps (up to revive_until): the experts that won less than
        revive_below of the training images since the last check are replaced by copies of the busiest experts,
        one source per inactive expert in order of their shares (a busy expert may hold two mechanisms, 004 sec 4's
        failure: "one expert specialized on two tasks, one expert did not specialize on any"). 004 sec 3 item 1:
        "experts may be added or removed during or after training"; an expert that wins nothing is never
        trained (Algorithm 1), so without this it cannot catch up. Off (0) by default: Algorithm 1 exactly."""
        step = ctx.step
        if not self.revive_every or step % self.revive_every or (self.revive_until is not None
                                                                 and step > self.revive_until):
            return
        share = self.win_counts / self.win_counts.sum().clamp_min(1.0)
        self.win_counts.zero_()
        order = share.argsort(stable=True).tolist()  # least won first
        dead = [j for j in order if share[j] < self.revive_below]
        sources = [j for j in reversed(order) if share[j] >= self.revive_below]
        for d, src in zip(dead, sources):
            self.revive(d, src)
            ctx.copy_optimizer_state(self.experts[d].parameters(), self.experts[src].parameters())
            self.revived.append((step, d, src))
            ctx.log_metric(f"revived_expert{d}", src, context="train")

    @torch.no_grad()
    def revive(self, dead: int, source: int) -> None:
        """Expert `dead` becomes a copy of expert `source` (weights and batch-norm statistics; after_step also
        copies the source's Adam moments), each weight tensor perturbed by N(0, (revive_noise * its RMS)^2) so that
        the two differ and the competition can split the source's images between them."""
        dst, src = self.experts[dead], self.experts[source]
        dst.load_state_dict(src.state_dict())
        for p in dst.parameters():
            p.add_(torch.randn_like(p) * (self.revive_noise * p.pow(2).mean().sqrt()))

    # -- interventions ------------------------------------------------------------------------------------------
    def _expert_index(self, k: Any, batch: int) -> torch.Tensor:
        names = self.graph.nodes
        if isinstance(k, str):
            if k not in names:
                raise KeyError(f"do(): unknown expert {k!r}; experts: {', '.join(names)} (or their indices "
                               f"0..{self.num_experts - 1})")
            k = names.index(k)
        k = torch.as_tensor(k, dtype=torch.int64)
        if k.dim() == 0:
            k = k.expand(batch)
        if k.shape != (batch,):
            raise ValueError(f"do(): 'expert' must be an index, a node name or ({batch},) indices; got shape "
                             f"{tuple(k.shape)}")
        if bool((k < 0).any() or (k >= self.num_experts).any()):
            raise ValueError(f"do(): expert indices must lie in 0..{self.num_experts - 1}; got {k.unique().tolist()}")
        return k

    @torch.no_grad()
    def do(self, x: torch.Tensor, do: Mapping[str, Any], on: str = "mechanism") -> torch.Tensor:
        """do(x, {"expert": k}, on="mechanism"): the images with the committee's selection J = argmax_j c_j
        replaced by expert k (an index 0..N'-1, a node name "expert{k+1}", or (B,) indices, one per image), i.e.
        the inverse mechanism E_k applied to x. x: (B, C, H, W) -> (B, C, H, W).

        The committee has no latent SCM whose values or noises could be set: on="value" / "noise" are errors.
        """
        if on in ("value", "noise"):
            raise ValueError(f"do(): on={on!r} intervenes on a latent SCM, which the ICM committee does not have; "
                             f"its interventions are mechanism-level: do(x, {{'expert': k}}, on='mechanism')")
        if on != "mechanism":
            raise ValueError(f"do(): on={on!r} is not an intervention target of the ICM committee; valid: mechanism")
        if set(do) != {"expert"}:
            raise KeyError(f"do(): the committee's mechanism-level do() takes {{'expert': k}}; got keys {sorted(do)}")
        k = self._expert_index(do["expert"], len(x)).to(x.device)
        out = torch.empty_like(x)
        for j in k.unique().tolist():  # each chosen expert runs on the whole batch (batch-norm running stats in eval)
            rows = torch.nonzero(k == j).squeeze(1)
            out.index_copy_(0, rows, self.experts[j](x).index_select(0, rows).to(out.dtype))
        return out

    @torch.no_grad()
    def counterfactual(self, x: torch.Tensor, do: Mapping[str, Any], on: str = "mechanism") -> torch.Tensor:
        """The same as do(): the committee's counterfactual "x had been inverted by expert k"."""
        return self.do(x, do, on=on)

    # -- figures ------------------------------------------------------------------------------------------------
    def _set_probe(self, dataset, index, device) -> None:
        """Keep up to PROBE_IMAGES validation images and their mechanism labels (factor `mechanism`) for the win
        matrix over training; labels are never used for training. No mechanism factor: no probe."""
        self._probe, self._probe_last = None, None
        if "mechanism" not in getattr(dataset, "factor_names", ()) or not len(index):
            return
        index = index[:PROBE_IMAGES]
        mech = dataset.index_to_factors(index)[:, dataset.factor_names.index("mechanism")]
        names = tuple(dataset.factor_value_names.get("mechanism", ())) or tuple(str(i) for i in range(mech.max() + 1))
        self._probe = (dataset.images_at(index).to(device), torch.as_tensor(mech, device=device), names)

    @torch.no_grad()
    def win_proportion(self, x: torch.Tensor, mechanism: torch.Tensor, num_mechanisms: int,
                       batch_size: int = 256, winners: torch.Tensor | None = None) -> torch.Tensor:
        """(M, N') share of each mechanism's images that each expert wins (004 Fig. 5); rows with no image are 0.
        winners: the (B,) winners of x if already known (else computed in batches of batch_size)."""
        if winners is None:
            winners = self.batched_winners(x, batch_size)
        counts = torch.bincount(mechanism.to(winners.device) * self.num_experts + winners,
                                minlength=num_mechanisms * self.num_experts).float()
        counts = counts.view(num_mechanisms, self.num_experts)
        return counts / counts.sum(1, keepdim=True).clamp_min(1)

    def batched_winners(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """winners(x) in batches of batch_size: (N, C, H, W) -> (N,) int64."""
        return torch.cat([self.winners(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])

    def _probe_winners(self) -> torch.Tensor:
        """The (P,) winners of the probe images, in eval mode (batch-norm running statistics)."""
        was_training = self.training
        self.eval()
        try:
            return self.batched_winners(self._probe[0])
        finally:
            self.train(was_training)

    def _probe_win_proportion(self, winners: torch.Tensor | None = None) -> torch.Tensor:
        """The (M, N') win matrix of the probe images (eval mode)."""
        x, mech, names = self._probe
        return self.win_proportion(x, mech, len(names), winners=self._probe_winners() if winners is None else winners)

    def track_metrics(self) -> dict[str, float]:
        """The probe's win statistics at each validation step (context "val"): min_winner_share, distinct_winners
        and spare_share (win_statistics), the specialisation over training as numbers, and
        the label-free assignment_stability: the share of probe images won by the same expert as at the last
        validation step (004 sec 3 item 2b's convergence criterion, "each expert consistently wins the same data
        points"; absent at a run's or a resume's first check). The matrix is kept for the track_images() call
        that follows at the same step."""
        if self._probe is None:
            return {}
        winners = self._probe_winners()
        self._probe_matrix = self._probe_win_proportion(winners)
        stats = win_statistics(self._probe_matrix.cpu().numpy())
        out = {k: float(stats[k]) for k in ("min_winner_share", "distinct_winners", "spare_share")}
        self._stability = None
        if self._probe_last is not None:
            self._stability = out["assignment_stability"] = float((winners == self._probe_last).float().mean())
        self._probe_last = winners
        return out

    def should_stop(self, ctx: FitContext) -> str | None:
        """004 sec 3 item 2b's convergence criterion ("stop if each example is assigned to the same experts for a
        pre-defined number of iterations"), label-free on the probe: with stop_stability set, training stops once
        assignment_stability >= stop_stability at stop_checks validation steps in a row, counting only steps
        after revive_until when revival is on (a revival moves assignments on purpose). The count restarts on
        resume."""
        if self.stop_stability is None:
            return None
        reviving = self.revive_every and (self.revive_until is None or ctx.step <= self.revive_until)
        if reviving or self._stability is None or self._stability < self.stop_stability:
            self._stable_checks = 0
            return None
        self._stable_checks += 1
        if self._stable_checks < self.stop_checks:
            return None
        return (f"converged: assignment_stability >= {self.stop_stability:g} at {self.stop_checks} validation "
                f"steps in a row ({ctx.val_every} steps apart; 004 sec 3 item 2b)")

    def track_images(self) -> dict[str, torch.Tensor]:
        """The win matrix on the probe images (eval mode) and their winners' outputs, at each validation step
        (the matrix of the track_metrics() call just before, if any)."""
        if self._probe is None:
            return {}
        x, mech, names = self._probe
        p, self._probe_matrix = self._probe_matrix, None
        if p is None:
            p = self._probe_win_proportion()
        was_training = self.training
        self.eval()
        try:
            grid = self.committee_grid(x[:16])
        finally:
            self.train(was_training)
        return {"win_matrix": matrix_heatmap(p.cpu(), rows=names, cols=[str(j) for j in range(self.num_experts)],
                                             title="win proportion (mechanism x expert)"),
                "committee": grid}

    @torch.no_grad()
    def committee_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(3, H, W) grid: row 1 the inputs, row 2 their winners' outputs (004 Fig. 3)."""
        out = self.invert(x)
        return make_grid(torch.cat([x, out]).float().cpu().expand(-1, 3, -1, -1), nrow=len(x), padding=2,
                         pad_value=0.5)

    @torch.no_grad()
    def experts_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(3, H, W) grid: row 1 the inputs, then one row per expert's outputs on them (004 Fig. 7)."""
        outs = self.expert_outputs(x)  # (N', B, C, H, W)
        return make_grid(torch.cat([x[None], outs]).flatten(0, 1).float().cpu().expand(-1, 3, -1, -1), nrow=len(x),
                         padding=2, pad_value=0.5)

    def report_images(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """committee.png (inputs over their winners' outputs) and experts.png (every expert on every input)."""
        return {"committee": self.committee_grid(x), "experts": self.experts_grid(x)}
