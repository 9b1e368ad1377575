"""CUDA checks, skipped without a GPU (tools/gpu_check.py runs them): every model kind, bf16, checkpoints, do(), DDP."""
from __future__ import annotations

import copy
import json
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from causalrep.build import build_dataset, build_model, build_split, model_kinds
from causalrep.experiment import Experiment
from causalrep.spec import load_spec
from causalrep.track.base import read_jsonl
from causalrep.train import Trainer, load_checkpoint
from causalrep.train.distributed import NullTracker

from conftest import sample_batch, tiny_data, tiny_spec

# the contract's tiny spec per kind and the torchrun helper of the gloo DDP test, imported as pytest itself
# imports them (tests/ is not a package: pytest puts a test folder on sys.path when it collects it)
for _sub in ("models", "train"):
    if str(Path(__file__).parent / _sub) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent / _sub))
from test_contract import contract_spec  # noqa: E402
from test_ddp import torchrun  # noqa: E402

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEVICE = torch.device("cuda")
BACKEND = "nccl"
# CPU vs CUDA in float32 (TF32 off, fixture below): the same maths in a different summation order (oneDNN's
# vs cuDNN's conv algorithms, GEMM tilings), ~1e-6 relative per op through the tiny 3-block nets; 1e-4 leaves
# ~100x headroom, while a real device bug (a wrong layout, a skipped op, a stale buffer) moves outputs by >= 1e-2.
ATOL = RTOL = 1e-4
# bf16 vs fp32 loss of the same batch and weights: 8-bit mantissa (eps 2^-8 = 3.9e-3) on every conv/linear
# input moves the loss by ~1e-3..1e-2 relative; 3e-2 as tools/bench_train.py's TOL["bf16"].
BF16_RTOL = 3e-2
# DDP gradient vs the single-process gradient of the same global batch: each rank's shard mean, then NCCL's
# average, vs one mean over the batch; fp32 reduction order only (~1e-7 relative). 1e-5 of the largest
# gradient leaves headroom; a wrong shard or scale is off by a factor of the world size or more.
DDP_RTOL = 1e-5


@pytest.fixture(autouse=True)
def _true_fp32():
    """CUDA float32 as on the CPU: no TF32 (10-bit mantissa) in convs and matmuls, so comparisons with the
    CPU measure only the summation order."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def to(extras: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in extras.items()}


def make_trainer(spec, model, dataset, run_dir, *, device="cuda", precision="fp32") -> Trainer:
    return Trainer(model=model, dataset=dataset, split=build_split(spec, dataset), run_dir=run_dir,
                   tracker=NullTracker(), steps=4, batch_size=4, device=device, precision=precision,
                   progress=False, resident="never")


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()).abs() / b.double().abs()).max())


@pytest.mark.parametrize("kind", model_kinds())
def test_every_kind_matches_the_cpu_and_trains_on_cuda(kind):
    spec = contract_spec(kind)
    model = build_model(spec).eval()
    x, extras = sample_batch(model, build_dataset(spec), 4)
    with torch.no_grad():
        u_cpu = model.encode(x)
        rec_cpu = model.reconstruct(x) if model.can("reconstruct") else None
        model.to(DEVICE)
        u_gpu = model.encode(x.to(DEVICE)).cpu()
        rec_gpu = model.reconstruct(x.to(DEVICE)).cpu() if model.can("reconstruct") else None
    torch.testing.assert_close(u_gpu, u_cpu, atol=ATOL, rtol=RTOL)
    if model.can("reconstruct"):
        torch.testing.assert_close(rec_gpu, rec_cpu, atol=ATOL, rtol=RTOL)

    model.train()
    out = model(x.to(DEVICE), **to(extras, DEVICE))
    assert out.loss.device.type == DEVICE.type and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    if not model.find_unused_parameters:  # the ICM committee leaves its losers' grads None on purpose (test_icm)
        assert all(g is not None for g in grads)
    grads = [g for g in grads if g is not None]
    assert grads and all(g.device.type == DEVICE.type and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("kind", model_kinds())
def test_bf16_autocast_step_is_finite(kind, tmp_path):
    spec = contract_spec(kind)
    dataset = build_dataset(spec)
    trainer = make_trainer(spec, build_model(spec, dataset), dataset, tmp_path, precision="bf16")
    x, extras = sample_batch(trainer.model, dataset, 4)
    trainer.extras = to(extras, trainer.device)
    out = trainer.train_step(x.to(trainer.device))
    assert torch.isfinite(out.loss)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    assert all(torch.isfinite(p).all() for p in params)  # after the optimiser step


def test_bf16_sae_loss_is_near_fp32(tmp_path):
    spec = tiny_spec("sae")
    dataset = build_dataset(spec)
    x, _ = sample_batch(build_model(spec, dataset), dataset, 4)
    losses = {}
    for precision in ("fp32", "bf16"):  # build_model seeds the init: the same weights for both
        trainer = make_trainer(spec, build_model(spec, dataset), dataset, tmp_path / precision, precision=precision)
        with trainer.autocast():
            dtype = trainer.model.encode(x.to(DEVICE)).dtype
        assert dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        losses[precision] = trainer.train_step(x.to(DEVICE)).loss.detach().cpu()
    rel = max_rel(losses["bf16"], losses["fp32"])
    assert 0 < rel <= BF16_RTOL, f"bf16 vs fp32 loss rel diff {rel:.2e}"  # 0 would mean autocast did nothing


def test_checkpoint_saved_on_cuda_loads_on_the_cpu(tmp_path):
    spec = tiny_spec("sae")
    dataset = build_dataset(spec)
    trainer = make_trainer(spec, build_model(spec, dataset), dataset, tmp_path)
    for _ in range(2):
        trainer.train_step(trainer.next_batch())
        trainer.step += 1
    trainer.checkpoint()

    ckpt = load_checkpoint(trainer.ckpt_path, map_location="cpu")
    tensors = []

    def walk(obj):
        if torch.is_tensor(obj):
            tensors.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(ckpt)
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    saved = trainer.model.state_dict()
    assert ckpt["model"].keys() == saved.keys()
    assert all(torch.equal(ckpt["model"][k], saved[k].cpu()) for k in saved)  # bit-exact copies

    cpu_model = build_model(spec, dataset)
    cpu_model.load_state_dict(ckpt["model"])
    cpu_model.eval()
    trainer.model.eval()
    x, _ = sample_batch(cpu_model, dataset, 4, seed=1)
    with torch.no_grad():
        rec_cpu = cpu_model.reconstruct(x)
        # the CUDA model's own weights moved to the CPU give the very same images ...
        assert torch.equal(copy.deepcopy(trainer.model).cpu().reconstruct(x), rec_cpu)
        # ... and the CUDA model itself agrees within float32 summation-order error
        torch.testing.assert_close(trainer.model.reconstruct(x.to(DEVICE)).cpu(), rec_cpu, atol=ATOL, rtol=RTOL)

    # a CPU trainer resumes from it (optimiser state, data position) and keeps training
    cpu_trainer = make_trainer(spec, build_model(spec, dataset), dataset, tmp_path, device="cpu")
    cpu_trainer.resume()
    assert cpu_trainer.step == 2
    assert torch.isfinite(cpu_trainer.train_step(cpu_trainer.next_batch()).loss)


def test_do_and_counterfactual_on_cuda_match_the_cpu():
    spec = tiny_spec("sae")
    dataset = build_dataset(spec)
    model = build_model(spec, dataset).eval()
    x, _ = sample_batch(model, dataset, 4)
    node, noise_node = model.graph.nodes[1], model.graph.nodes[2]
    results = {}
    for device in ("cpu", DEVICE):
        model.to(device)
        xd = x.to(device)
        values = model.node_values(xd)[node].flip(0)  # do(S_2 := another image's features)
        results[str(device)] = {"reconstruct": model.reconstruct(xd).detach(), "do": model.do(xd, {node: values}),
                                "counterfactual": model.counterfactual(xd, {noise_node: 0.5})}
    cpu, gpu = results["cpu"], results[str(DEVICE)]
    for key in ("do", "counterfactual"):
        # the intervention must change the images by far more than the tolerance, or the comparison is idle
        assert float((cpu[key] - cpu["reconstruct"]).abs().max()) > 100 * ATOL
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], atol=ATOL, rtol=RTOL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, backend: str) -> None:
    """One rank: an all-reduce with a closed-form answer, then DDP's gradient of this rank's shard of a
    global batch; rank 0 also computes the single-process gradient of the whole batch and writes both."""
    import os

    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # a fresh process
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        total = torch.tensor([rank + 1.0], device=device)
        dist.all_reduce(total)  # sum over ranks of rank + 1 = world (world + 1) / 2
        spec = tiny_spec("sae")
        r = spec.data.resolution
        x = torch.rand(2 * world, 1, r, r, generator=torch.Generator().manual_seed(0))  # the global batch
        ids = [rank] if device.type == "cuda" else None
        ddp = DistributedDataParallel(build_model(spec).to(device), device_ids=ids)
        ddp(x[rank::world].to(device)).loss.backward()  # the loss is a batch mean: equal shards average exactly
        if rank == 0:
            single = build_model(spec).to(device)  # the same seeded init
            single(x.to(device)).loss.backward()
            pairs = list(zip(ddp.module.parameters(), single.parameters()))
            diff = max(float((a.grad - b.grad).abs().max()) for a, b in pairs)
            scale = max(float(b.grad.abs().max()) for _, b in pairs)
            Path(out).write_text(json.dumps({"backend": dist.get_backend(), "world": dist.get_world_size(),
                                             "all_reduce": float(total), "grad_max_abs_diff": diff,
                                             "grad_max_abs": scale}))
    finally:
        dist.destroy_process_group()


def test_ddp_over_nccl_on_every_gpu_gives_the_single_process_gradient(tmp_path):
    world = torch.cuda.device_count()
    out = tmp_path / "ddp.json"
    mp.spawn(_ddp_worker, args=(world, _free_port(), str(out), BACKEND), nprocs=world, join=True)
    res = json.loads(out.read_text())
    print(f"DDP over {res['backend']} on {world} GPU(s): max |g_ddp - g_single| {res['grad_max_abs_diff']:.3g} "
          f"(max |g| {res['grad_max_abs']:.3g})")
    assert res["backend"] == BACKEND and res["world"] == world
    assert res["all_reduce"] == world * (world + 1) / 2
    assert res["grad_max_abs"] > 0 and res["grad_max_abs_diff"] <= DDP_RTOL * res["grad_max_abs"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="the Trainer wraps DDP only for 2+ processes (one GPU each)")
def test_torchrun_trainer_over_nccl_logs_the_single_process_first_loss(tmp_path, monkeypatch):
    import yaml

    # the torchrun processes inherit this: no TF32 in cuBLAS/cuDNN there either (_true_fp32 covers this one)
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")

    world = torch.cuda.device_count()
    data = tiny_data("sae", 4, {"kind": "chain", "nodes": 4})
    data["train"] = {**data["train"], "steps": 3, "batch_size": 2 * world, "log_every": 1, "val_every": 3,
                     "checkpoint_every": 3}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    single = Experiment(load_spec(spec_file), out=tmp_path / "single", device="cuda", progress=False)
    single.run()
    res = torchrun(str(spec_file), "--out", str(tmp_path / "ddp"), "--device", "cuda", nproc=world)
    assert f"({world} processes)" in res.stdout
    (run_dir,) = list((tmp_path / "ddp" / "tiny").iterdir())
    ddp_loss = [r["value"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["name"] == "loss"]
    single_loss = [r["value"] for r in read_jsonl(single.run_dir / "metrics.jsonl") if r["name"] == "loss"]
    assert len(ddp_loss) == len(single_loss) == 3
    # step 1 is the same init on the same global batch, before any update: equal up to summation order
    assert ddp_loss[0] == pytest.approx(single_loss[0], rel=RTOL)
    assert all(isinstance(v, float) for v in ddp_loss)  # non-finite values are logged as strings
