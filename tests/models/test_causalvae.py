"""CausalVAE (003): the causal layer, the mask layer, the DAG schedule, do() on learned graphs, SHD, pictures."""
from __future__ import annotations

import networkx as nx
import pytest
import torch

from causalrep.build import build_model
from causalrep.graph.compare import structural_hamming_distance
from causalrep.graph.draw import adjacency_heatmap, draw_graph
from causalrep.graph.penalty import dag_penalty
from causalrep.nn.causal import AugmentedLagrangian, GatedMechanism, linear_scm
from causalrep.spec import load_spec

PENDULUM_NODES = ["pendulum_angle", "light_angle", "shadow_position", "shadow_length"]


def test_linear_scm_on_a_hand_dag():
    # z1 = e1; z2 = 2 z1 + e2; z3 = -1 z1 + 0.5 z2 + e3  (A[i, j]: weight of i -> j; 003 eq 27)
    a = torch.tensor([[0.0, 2.0, -1.0], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    eps = torch.tensor([[1.0, 3.0, -2.0]])[..., None]  # (B=1, n=3, k=1)
    z1 = 1.0
    z2 = 2 * z1 + 3.0
    z3 = -1 * z1 + 0.5 * z2 - 2.0
    assert torch.allclose(linear_scm(a, eps)[0, :, 0], torch.tensor([z1, z2, z3]))
    # the same as (I - A^T)^-1 eps written out, per dim of a k = 2 node vector
    eps2 = torch.randn(5, 3, 2)
    c = torch.linalg.inv(torch.eye(3) - a.T)
    assert torch.allclose(linear_scm(a, eps2), torch.einsum("ij,bjk->bik", c, eps2), atol=1e-6)


def test_dag_penalty_zero_on_the_pendulum_dag_positive_on_a_cycle_with_gradcheck():
    true = torch.zeros(4, 4)
    true[0, 2] = true[0, 3] = true[1, 2] = true[1, 3] = 0.8
    assert dag_penalty(true).item() == 0.0  # exactly: a nilpotent A has tr(M^k) = 0 for k >= 1
    cyc = true.clone()
    cyc[2, 0] = 0.5  # shadow_position -> pendulum_angle closes a 2-cycle
    assert dag_penalty(cyc).item() > 0
    w = cyc.double().requires_grad_()
    assert torch.autograd.gradcheck(dag_penalty, (w,))


def test_augmented_lagrangian_updates_on_schedule():
    al = AugmentedLagrangian(alpha=0.0, rho=1.0, growth=10.0, every=2)
    h = torch.tensor(0.5)
    assert float(al(h)) == pytest.approx(0.5 * 1.0 * 0.25)
    al.step(h)  # step 1: no update
    assert (float(al.lam), float(al.rho)) == (0.0, 1.0)
    al.step(h)  # step 2: lam += rho * h = 0.5; h > inf/4 is false -> rho stays
    assert (float(al.lam), float(al.rho)) == (0.5, 1.0)
    al.step(h)
    al.step(h)  # step 4: lam = 0.5 + 0.5; h = 0.5 > 0.25 * 0.5 -> rho *= 10
    assert (float(al.lam), float(al.rho)) == (1.0, 10.0)
    fixed = AugmentedLagrangian(schedule="fixed", alpha=3.0)
    for _ in range(5):
        fixed.step(h)
    assert float(fixed(h)) == pytest.approx(1.5)  # alpha * H(A), 003 eq 41


def test_gated_mechanism_ignores_a_zero_gated_parent_and_is_norm_bounded():
    torch.manual_seed(0)
    g = GatedMechanism(nodes=3, hidden=8)
    v = torch.randn(64, 3)
    gate = torch.tensor([1.0, 0.0, 1.0])
    w = v.clone()
    w[:, 1] = torch.randn(64)  # another value for the gated-off input
    assert torch.equal(g(v * gate), g(w * gate))
    # each input moves the output by at most ~1.1 |dv| (unit-norm columns and row, Mish' <= 1.1)
    d = torch.zeros(64, 3)
    d[:, 0] = 1.0
    assert (g(v + d) - g(v)).abs().max() <= 1.2


def spec(overrides=()):
    data = {"name": "t", "seed": 0, "data": {"name": "pendulum", "resolution": 32},
            "graph": {"kind": "learned", "nodes": PENDULUM_NODES, "node_dim": 2},
            "model": {"kind": "causalvae", "latent_dim": 8, "encoder": {"kind": "conv", "blocks": 3, "channels": 8,
                                                                       "groups": 4},
                      "decoder": {"kind": "conv", "blocks": 3, "channels": 8, "groups": 4}},
            "train": {"steps": 2, "batch_size": 4}, "track": {"kind": "jsonl"}}
    return load_spec(data=data, overrides=overrides)


def pendulum_model():
    model = build_model(spec()).eval()
    with torch.no_grad():  # set the true graph as the learned one
        w = torch.zeros(4, 4)
        w[0, 2] = w[0, 3] = w[1, 2] = w[1, 3] = 0.9
        model.adjacency.weight.copy_(w)
    return model


def decoder_inputs(model, fn):
    """The (B, n, k) decoder input z~ that fn() feeds the decoder."""
    seen = []
    handle = model.decoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    try:
        fn()
    finally:
        handle.remove()
    return seen[-1].view(seen[-1].shape[0], 4, -1)


def test_value_do_keeps_non_descendants_bit_equal_and_recomputes_descendants():
    model = pendulum_model()
    x = torch.rand(5, 3, 32, 32)
    before = model.node_values(x)  # the concepts z (causal layer output)
    u = model.encode(x)
    value = model.value_of("light_angle", 100.0)  # degrees -> the node's standardised value, (k,)
    assert value.shape == (2,)
    logits = model.decode_values_logits(u, {"light_angle": value})
    assert logits.shape == x.shape
    # rebuild by hand: z' = z with z'_light = value; the shadows (light's children) recomputed through their
    # mechanisms plus x's residuals; the decoder reads g(A ∘ z') + (I - A^T) z' (eq 27 solved for the noise)
    z = torch.stack([before[n] for n in PENDULUM_NODES], 1)
    a, g = model.A, model.mask.mechanism
    zp = z.clone()
    zp[:, 1] = value
    for i in (2, 3):
        zp[:, i] = g(i, a, zp) + z[:, i] - g(i, a, z)
    want = torch.stack([g(i, a, zp) for i in range(4)], 1) + zp - torch.einsum("ji,bjk->bik", a, zp)
    plain = decoder_inputs(model, lambda: model.decode_logits(u))  # the reconstruction's z~
    done = decoder_inputs(model, lambda: model.do(x, {"light_angle": value}))
    assert torch.allclose(done[:, 1:], want[:, 1:], atol=1e-6)
    assert torch.equal(done[:, 0], plain[:, 0])  # non-descendant pendulum: bit-equal decoder input
    assert not torch.allclose(done[:, 2:], plain[:, 2:], atol=1e-3)  # descendants move
    assert torch.allclose(torch.sigmoid(model.decoder(done.flatten(1))), model.do(x, {"light_angle": value}))
    # setting light to its own value changes nothing (residuals restore x's shadows)
    same = decoder_inputs(model, lambda: model.do(x, {"light_angle": before["light_angle"]}))
    assert torch.allclose(same, plain, atol=1e-5)
    # an effect set directly changes nothing else (it has no descendants)
    out = model.do(x, {"shadow_length": model.value_of("shadow_length", 5.0)})
    assert out.shape == x.shape
    assert model.label_of("light_angle", value).item() == pytest.approx(100.0, rel=1e-5)


def test_do_errors_name_node_and_shapes():
    model = pendulum_model()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(KeyError, match="unknown node 'shadow'"):
        model.do(x, {"shadow": 0.0})
    with pytest.raises(ValueError, match=r"node 'light_angle' has shape \(3,\); expected a number, \(2,\) or \(2, 2\)"):
        model.do(x, {"light_angle": torch.zeros(3)})


def test_learned_graph_and_shd_against_the_pendulum():
    model = pendulum_model()
    from causalrep.data.pendulum import Pendulum
    from causalrep.metrics.structure import shd_metric

    assert shd_metric(model=model, dataset=Pendulum(resolution=32)) == {"shd": 0.0, "learned_edges": 4.0}
    with torch.no_grad():
        model.adjacency.weight[2, 3] = 0.5  # an extra edge shadow_position -> shadow_length
        model.adjacency.weight[1, 2] = 0.0  # and a missing one
    assert shd_metric(model=model, dataset=Pendulum(resolution=32))["shd"] == 2.0


def test_structural_hamming_distance_hand_cases():
    t = nx.DiGraph([("a", "b"), ("b", "c")])
    assert structural_hamming_distance(t, t.copy()) == 0
    assert structural_hamming_distance(t, nx.DiGraph([("b", "a"), ("b", "c")])) == 1  # reversal counts once
    g = nx.DiGraph([("a", "b")])
    g.add_node("c")
    assert structural_hamming_distance(t, g) == 1  # missing
    assert structural_hamming_distance(t, nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c")])) == 1  # extra
    with pytest.raises(ValueError, match="node sets differ"):
        structural_hamming_distance(t, nx.DiGraph([("a", "d")]))


def test_builder_errors_name_the_key_path():
    from causalrep.errors import SpecError

    with pytest.raises(SpecError, match="graph.nodes: no dataset label named 'angle'"):
        build_model(spec(["graph.nodes=[angle, light_angle, shadow_position, shadow_length]"]))
    with pytest.raises(SpecError, match="graph.kind: model 'causalvae' learns its graph"):
        build_model(spec(["graph={kind: dag, nodes: [a, b], edges: [[a, b]]}"]))


def rgb255(img: torch.Tensor, x: int, y: int) -> tuple[int, ...]:
    """The (R, G, B) in 0..255 of pixel column x, row y of a (3, H, W) image in [0, 1]."""
    return tuple(int(round(255 * float(c))) for c in img[:, y, x])


def test_pictures_are_images():
    from scipy import ndimage

    from causalrep.graph.draw import CELL, LABEL_W

    model = pendulum_model()
    a = model.A.detach()
    # pendulum_model's hand-set weights: 0.9 on the four true edges (angles -> shadow), 0 elsewhere
    assert torch.equal(a != 0, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]).bool())
    heat = adjacency_heatmap(a, PENDULUM_NODES, 0.3)
    top = 24  # title row above the cells
    assert heat.shape == (3, top + 4 * CELL + 24, LABEL_W + 4 * CELL + 8)
    # documented colour map: intensity |A_ij| / max|A|, blue for positive: c = int(255 * (1 - |w|)) -> (c, c, 255);
    # an edge weight 0.9 = max|A| is pure blue (0, 0, 255), an absent edge white; frame black iff |A_ij| > 0.3
    for i in range(4):
        for j in range(4):
            x0, y0 = LABEL_W + j * CELL, top + i * CELL
            edge = bool(a[i, j] != 0)
            assert rgb255(heat, x0 + CELL - 10, y0 + 8) == ((0, 0, 255) if edge else (255, 255, 255)), (i, j)
            assert rgb255(heat, x0, y0 + CELL // 2) == ((0, 0, 0) if edge else (200, 200, 200)), (i, j)
    # a negative weight at half the maximum: red (255, c, c) with c = int(255 * 0.5) = 127
    half = adjacency_heatmap(torch.tensor([[0.0, -0.45], [0.9, 0.0]]), ["a", "b"])
    assert rgb255(half, LABEL_W + CELL + CELL - 10, top + 8) == (255, 127, 127)
    assert rgb255(half, LABEL_W + CELL - 10, top + CELL + 8) == (0, 0, 255)

    g = draw_graph(model.learned_graph())
    assert g.shape == (3, 360, 360)
    # node discs are filled (210, 225, 255): one connected region per node, centred on networkx's circular
    # layout for 4 nodes, (cos, sin) of 0, 90, 180, 270 degrees, mapped to pixels margin 70 + (p + 1) / 2 * 220
    disc = (g.mul(255).round().permute(1, 2, 0) == torch.tensor([210.0, 225.0, 255.0])).all(-1).numpy()
    labels, count = ndimage.label(disc)
    # a disc (radius 22 less its 2 px outline: about pi * 20^2 = 1257 px) vs the few-pixel counters of a digit
    # glyph (the "4"'s triangle) drawn on it
    big = [k for k in range(1, count + 1) if (labels == k).sum() > 500]
    assert len(big) == 4
    centres = sorted((round(cx), round(cy)) for cy, cx in ndimage.center_of_mass(disc, labels, big))
    expected = sorted([(290, 180), (180, 70), (70, 180), (180, 290)])
    assert all(abs(c[0] - e[0]) <= 1 and abs(c[1] - e[1]) <= 1 for c, e in zip(centres, expected)), centres
    # arrows are 2 px black lines between the discs: the midpoint of each of the 4 node pairs is black ink
    # exactly where the pair is an edge of the learned graph (either direction), white canvas otherwise
    xy = dict(zip(model.nodes, [(290, 180), (180, 70), (70, 180), (180, 290)]))
    edges = {frozenset(e) for e in model.learned_graph().edges}
    assert len(edges) == 4
    for u, v in [(0, 2), (0, 3), (1, 2), (1, 3), (0, 1), (2, 3)]:
        (x0, y0), (x1, y1) = xy[model.nodes[u]], xy[model.nodes[v]]
        ink = frozenset((model.nodes[u], model.nodes[v])) in edges
        assert rgb255(g, (x0 + x1) // 2, (y0 + y1) // 2) == ((0, 0, 0) if ink else (255, 255, 255)), (u, v)

    images = model.report_images(torch.rand(2, 3, 32, 32))
    assert set(images) == {"adjacency", "learned_graph"}
    assert torch.equal(images["learned_graph"], g)
    assert torch.equal(images["adjacency"], adjacency_heatmap(a, PENDULUM_NODES, model.adjacency.threshold))


@pytest.mark.parametrize("graph_from, image_terms_move_a", [("joint", True), ("labels", False)])
def test_graph_from_decides_which_terms_train_the_adjacency(graph_from, image_terms_move_a):
    model = build_model(spec([f"model.graph_from={graph_from}"])).train()
    with torch.no_grad():
        model.adjacency.weight.fill_(0.3)  # every allowed edge present, so every term can reach A
    from causalrep.data.pendulum import Pendulum
    from conftest import sample_batch

    x, extras = sample_batch(model, Pendulum(resolution=32), 4)
    out = model(x, **extras)
    g_rec = torch.autograd.grad(out.recon, model.adjacency.weight, retain_graph=True, allow_unused=True)[0]
    assert (g_rec is not None and bool(g_rec.abs().sum() > 0)) == image_terms_move_a
    g_u = torch.autograd.grad(out.l_u, model.adjacency.weight)[0]
    assert g_u.abs().sum() > 0  # the label loss trains A either way (003 eq 38)


def test_label_prior_kl_matches_the_closed_form():
    from causalrep.models.causalvae import _gauss_kl

    # KL(N(m, v) || N(u, s^2)) = 0.5 * ((v + (m - u)^2) / s^2 - 1 - log v + log s^2), per dim
    m, v, u, s2 = 0.3, 0.5, -0.2, 0.01
    want = 0.5 * ((v + (m - u) ** 2) / s2 - 1 - __import__("math").log(v) + __import__("math").log(s2))
    got = _gauss_kl(torch.tensor([[m]]), torch.tensor([[v]]), torch.tensor([[u]]), s2)
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(_gauss_kl(torch.zeros(1, 3), torch.ones(1, 3))) == 0.0  # N(0, 1) against itself


@pytest.mark.parametrize("form", ["sigmoid", "linear"])
def test_label_loss_forms_match_003_eq_38_by_hand(form):
    # l_u's prediction of u from A: sigmoid(A^T u) as 003 eq 38 writes it, or the linear SEM's A^T u; a hand
    # case on the pendulum's 4 nodes with one edge pendulum_angle -> shadow_position of weight 0.5
    model = build_model(spec([f"model.label_loss={form}"]))
    assert len(model.label_mechanisms) == 0  # no parameters besides A
    a = torch.zeros(4, 4)
    a[0, 2] = 0.5
    u = torch.tensor([[2.0, -1.0, 0.0, 3.0]])
    pred = model.predict_labels(u, a)
    lin = torch.tensor([[0.0, 0.0, 1.0, 0.0]])  # (A^T u)_2 = A[0, 2] * u_0 = 1
    want = torch.sigmoid(lin) if form == "sigmoid" else lin
    torch.testing.assert_close(pred, want)


def test_do_on_a_cyclic_learned_graph_is_a_clear_error():
    # 003's fixed alpha H(A) only penalises cycles: a thresholded A can keep one (measured: the published-setting
    # sweep, seed 0); do() then has no topological order for the descendants and must say so, naming the cycle
    model = pendulum_model()
    with torch.no_grad():
        model.adjacency.weight.fill_(0.0)
        model.adjacency.weight[0, 2] = 0.9  # pendulum_angle -> shadow_position
        model.adjacency.weight[2, 0] = 0.9  # shadow_position -> pendulum_angle
    assert int((model.A.abs() > model.adjacency.threshold).sum()) == 2  # the spec forbids no edge
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="has a cycle, (pendulum_angle -> shadow_position -> pendulum_angle|"
                                         "shadow_position -> pendulum_angle -> shadow_position)"):
        model.do(x, {"light_angle": 0.0})


def test_intervention_grid_rows_are_do_on_each_node_and_labelled():
    from causalrep.generate import intervention_grid, intervention_tiles

    model = pendulum_model()
    x = torch.rand(1, 3, 32, 32)
    values = {"pendulum_angle": [-1.0, 0.0, 1.0], "light_angle": [0.5]}
    tiles = intervention_tiles(model, x, values)
    assert tiles.shape == (3, 3, 3, 32, 32)  # two do() rows and the input row, 3 wide
    with torch.no_grad():
        torch.testing.assert_close(tiles[0, 2], model.do(x, {"pendulum_angle": 1.0})[0])
        torch.testing.assert_close(tiles[1, 0], model.do(x, {"light_angle": 0.5})[0])
        torch.testing.assert_close(tiles[2, 1], model.reconstruct(x)[0])
    assert bool((tiles[1, 1:] == 1).all()) and bool((tiles[2, 2] == 1).all())  # short rows padded white
    grid = intervention_grid(model, x, values, value_labels={"pendulum_angle": ["-40", "0", "40"]})
    # 32 px tiles upscaled nearest by 3 (figures.labelled_grid: >= 64 px a tile, >= 256 px a side), plus margins
    assert grid.shape[0] == 3 and grid.shape[1] >= 3 * 96 and grid.shape[2] >= 3 * 96
