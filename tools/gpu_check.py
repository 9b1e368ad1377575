"""The prepared GPU check: cuda tests, training and metric benchmarks and a timed SAE-12 run, in one summary.json.

    python3 tools/gpu_check.py OUT_DIR [--budget-s 480] [--train-s 270]   # on a CUDA machine
    python3 tools/gpu_check.py OUT_DIR --cpu-smoke                        # the same steps at toy size, CPU

Stages, each a subprocess (this interpreter, PYTHONPATH = the repo root, no aim needed: the run tracks to
jsonl) with its own timeout carved from the budget and its output in OUT_DIR/<stage>.log:
  pytest         the tests marked `cuda` (tests/test_cuda.py); on the CPU they must all skip cleanly
  bench_train    tools/bench_train.py at the paper configuration (64x64, batch 128, SAE-12): naive eager
                 against bf16 / channels_last / torch.compile / CUDA-graph variants, same run
  bench_metrics  tools/bench_metrics.py (the suite as the package runs it: numpy / scikit-learn / LightGBM on
                 this machine's CPU cores, SAP's torch solver there too)
  bench_tensor   tools/bench_tensor_metrics.py: the torch metrics (MIG, SAP, IRS, modularity, discretisation,
                 mutual information) on the GPU against the numpy path on the CPU, same run
  train          python -m causalrep.run specs/sae12.yaml on 3D-Shapes 64x64 with bench_train's fastest Trainer
                 setting, steps sized to --train-s from its measured steps/s, then the metric suite
The training loop gets --train-s only where the earlier stages leave room for it and its fixed costs inside
--budget-s, else less (summary: train.plan.short_of_target). Unmeasured estimate before a first GPU run: the
other stages and those costs take ~4.5-5.5 minutes, so 480 s trains ~2-3 minutes and --budget-s 600 the full 270 s.
A failing stage does not stop the others. OUT_DIR/summary.json (rewritten after every stage) holds the device,
torch, each stage's {rc, wall_s, ok} and its figures; it is also the last stdout line. Exit code 0 only if
every stage is ok.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from causalrep.train.trainer import describe_device  # noqa: E402

STAGES = ("pytest", "bench_train", "bench_metrics", "bench_tensor", "train")
METRICS = "[reconstruction,dci,mig,sap,irs,modexp]"
# what the stages import beyond torch; a plain python3 lacking one fails that stage, and the summary says why
MODULES = ("pytest", "numpy", "scipy", "sklearn", "threadpoolctl", "h5py", "attrs", "yaml", "networkx", "tqdm",
           "torchvision")
POLL_S = 0.1  # metrics.jsonl polling: logs come every 100 steps (~0.5 s at the goal's 150 it/s)

# Per mode: each stage's timeout cap and the floor kept free for it while earlier stages run (seconds), the
# bench and training sizes, and the training plan. CUDA: the 8-minute check on one H100-class GPU.
CUDA = {
    "cap": {"pytest": 150, "bench_train": 210, "bench_metrics": 60, "bench_tensor": 45},
    "floor": {"pytest": 30, "bench_train": 60, "bench_metrics": 20, "bench_tensor": 10, "train": 150},
    "bench_train": ["--device", "cuda", "--paper", "--steps", "50", "--repeats", "3", "--warmup", "2",
                    # 6 check steps: the CUDA-graph variants' replays (steps 4-6, after 3 eager ones) are checked too
                    "--check-steps", "6", "--variants", "bf16+channels_last,bf16+compile+channels_last,"
                    "bf16+channels_last+graph,bf16+compile+channels_last+graph"],
    # 1000/500 points keep the reference's sequential GradientBoostingClassifier fits near 20 s
    "bench_metrics": ["--n-train", "1000", "--n-test", "500"],
    # the size (10k / 5k, D = 10, five 10-valued factors); ~15 s on 2 CPU cores for the numpy side
    "bench_tensor": ["--device", "cuda", "--repeats", "3"],
    "train": ["--device", "cuda", "--set", "evaluate.val_samples=10000"],
    # estimates of the run's fixed costs, reserved out of its timeout before steps are sized: start-up
    # (imports, the 3D-Shapes geometry ray-cast, 336k training images rendered onto the GPU) and the end
    # (six metrics on disentanglement_lib's 10,000 / 5,000 codes, the report's grids); summary.json records the
    # real wall times to tune them
    "startup_s": 45, "eval_s": 75, "min_steps": 100, "max_steps": 100_000,  # 100k: the paper's length (001 A.2.2)
    "fallback_steps_per_s": 50.0,  # only when bench_train gave no figure: a slow GPU's rate, to stay in time
}
SMOKE = {
    "cap": {"pytest": 120, "bench_train": 120, "bench_metrics": 120, "bench_tensor": 60},
    "floor": {"pytest": 5, "bench_train": 5, "bench_metrics": 5, "bench_tensor": 5, "train": 20},
    "bench_train": ["--device", "cpu", "--steps", "2", "--repeats", "1", "--warmup", "1", "--check-steps", "2",
                    "--variants", "naive,channels_last", "--set", "data.resolution=16", "--set", "train.batch_size=4"],
    "bench_metrics": ["--n-train", "200", "--n-test", "100", "--dim", "4", "--sizes", "2,3"],
    "bench_tensor": ["--device", "cpu", "--train", "200", "--test", "100", "--latents", "4", "--sizes", "2,3",
                     "--repeats", "1"],
    "train": ["--device", "cpu", "--set", "data.resolution=16", "--set", "train.batch_size=4",
              "--set", "train.log_every=2", "--set", "train.val_every=1000", "--set", "train.checkpoint_every=1000",
              "--set", "evaluate.val_samples=200", "--set", "evaluate.hybrid_latents=16",
              "--set", "evaluate.traversal_steps=3"],
    "startup_s": 10, "eval_s": 30, "min_steps": 12, "max_steps": 40,  # >= 6 logged losses for the rate
    "fallback_steps_per_s": 5.0,
}


class Stage:
    """One subprocess: output to OUT_DIR/<name>.log, killed with its whole process group at the timeout."""

    def __init__(self, name: str, cmd: list[str], out: Path, env: dict[str, str]):
        self.name, self.cmd, self.env = name, cmd, env
        self.log = out / f"{name}.log"
        self.record: dict = {"cmd": " ".join(cmd), "log": str(self.log)}

    def run(self, timeout: float, poll=None) -> dict:
        t0 = time.perf_counter()
        with open(self.log, "w") as fh:
            fh.write(f"$ {' '.join(self.cmd)}\n")
            fh.flush()
            # own session: a timeout kills pytest's spawned ranks or torch.compile's workers with the stage
            proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            timed_out = False
            while proc.poll() is None:
                poll = self._poll(poll)
                if time.perf_counter() - t0 > timeout:
                    timed_out = True
                    kill_group(proc)
                    break
                time.sleep(POLL_S)
            self._poll(poll)
        rc = 124 if timed_out else proc.returncode
        self.record.update(rc=rc, wall_s=round(time.perf_counter() - t0, 1), timeout_s=round(timeout, 1),
                           timed_out=timed_out)
        return self.record

    def _poll(self, poll):
        """Call poll; one that raises is recorded and dropped, so it can neither end the loop nor orphan the stage."""
        if poll is None:
            return None
        try:
            poll()
            return poll
        except Exception as exc:
            self.record["poll_error"] = repr(exc)[:300]
            return None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def last_json(text: str, key: str) -> dict | None:
    """The last line of a log that is a JSON object holding `key` (a benchmark's result line)."""
    for line in reversed(text.splitlines()):
        start = line.find("{")
        if start < 0:
            continue
        try:
            obj = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and key in obj:
            return obj
    return None


def junit_counts(path: Path) -> dict | None:
    """passed / failed / errors / skipped of a pytest --junitxml report (summed over its test suites)."""
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    return {"passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"], "failed": n["failures"],
            "errors": n["errors"], "skipped": n["skipped"], "tests": n["tests"]}


class TrainWatch:
    """Training steps/s from the run's metrics.jsonl as it grows: steps between the first and the last logged
    training loss over the wall time between their appearance, so start-up, compilation and evaluation are
    excluded. Each poll stamps only the newest step it sees (the others were written earlier): the error is
    at most one poll interval at either end."""

    def __init__(self, log: Path):
        self.log, self.run_dir, self.offset = log, None, 0
        self.first: tuple[int, float] | None = None
        self.last: tuple[int, float] | None = None

    def poll(self) -> None:
        if self.run_dir is None:
            m = re.search(r"^run folder: (.+?)(?: \(\d+ processes\))?$", self.log.read_text(errors="replace"), re.M)
            if m is None:
                return
            self.run_dir = Path(m.group(1))
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        with open(path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self.offset += len(whole)
        steps = [r["step"] for r in map(json.loads, whole.decode().splitlines())
                 if r.get("name") == "loss" and r.get("context") == "train"]
        if steps:
            mark = (max(steps), time.perf_counter())
            self.first = self.first or mark
            self.last = mark

    def figures(self) -> dict:
        if self.first is None or self.last[0] <= self.first[0]:
            return {"steps_per_s": None}
        dt = self.last[1] - self.first[1]
        steps = self.last[0] - self.first[0]
        return {"steps_per_s": round(steps / dt, 3), "timed_steps": steps, "timed_s": round(dt, 1)}

    def untimed_s(self, wall_s: float) -> float | None:
        """The run's wall time outside the timed loop (start-up, compilation, evaluation, report): what the
        startup_s + eval_s reserve should cover."""
        return None if self.first is None else round(wall_s - (self.last[1] - self.first[1]), 1)


def training_setting(bench: dict | None, cuda: bool) -> dict:
    """bench_train's fastest variant the Trainer can run (an equivalent one, not a CUDA-graph replay): its
    precision / channels_last / compile, measured steps/s and first step (compilation) time."""
    usable = {name: v for name, v in ((bench or {}).get("variants") or {}).items()
              if v.get("equivalent") and not (v.get("options") or {}).get("cuda_graph")}
    if not usable:
        return {"variant": None, "precision": "bf16" if cuda else "fp32", "channels_last": True, "compile": False,
                "steps_per_s": None, "first_step_s": 0.0}
    name = max(usable, key=lambda n: usable[n]["steps_per_s"])
    opts = usable[name]["options"] or {}  # naive: None (fp32, NCHW, eager)
    return {"variant": name, "precision": opts.get("precision", "fp32"),
            "channels_last": bool(opts.get("channels_last")), "compile": bool(opts.get("compile")),
            "steps_per_s": usable[name]["steps_per_s"], "first_step_s": usable[name].get("first_step_s", 0.0)}


def plan_steps(setting: dict, cfg: dict, timeout: float, train_s: float) -> dict:
    """Steps that fill train_s at the measured rate, shortened when the stage's timeout minus its fixed costs
    (start-up, compilation, evaluation) is less."""
    rate = setting["steps_per_s"] or cfg["fallback_steps_per_s"]
    reserve = cfg["startup_s"] + cfg["eval_s"] + (setting["first_step_s"] if setting["compile"] else 0.0)
    seconds = max(min(train_s, timeout - reserve), 0.0)
    steps = int(min(max(rate * seconds, cfg["min_steps"]), cfg["max_steps"]))
    return {"steps": steps, "planned_train_s": round(steps / rate, 1), "target_train_s": train_s,
            "rate_used": rate, "reserve_s": round(reserve, 1),
            "short_of_target": steps / rate < 0.95 * train_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for summary.json, the stage logs and the training run")
    ap.add_argument("--cpu-smoke", action="store_true", help="every stage at toy size on the CPU (< 60 s on 2 cores)")
    ap.add_argument("--budget-s", type=float, default=480, help="wall-clock budget for all stages (default 480)")
    ap.add_argument("--train-s", type=float, default=None,
                    help="training-loop seconds to aim for (default 270 on CUDA, 1 in --cpu-smoke)")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        ap.error(f"torch {torch.__version__} (cuda build {torch.version.cuda}) sees no CUDA device; "
                 "use --cpu-smoke to run the same steps on the CPU")
    cfg = SMOKE if smoke else CUDA
    train_s = args.train_s if args.train_s is not None else (1.0 if smoke else 270.0)
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONUNBUFFERED": "1"}
    if smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # device cpu throughout, even on a GPU machine: the cuda tests skip
    py = sys.executable
    summary = {
        "mode": "cpu-smoke" if smoke else "cuda",
        "device": describe_device("cpu") if smoke else torch.cuda.get_device_name(0),
        "gpus": 0 if smoke else torch.cuda.device_count(),
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "python": sys.version.split()[0],
        "modules_missing": [m for m in MODULES if importlib.util.find_spec(m) is None],
        "budget_s": args.budget_s, "stages": {}, "ok": False,
    }

    def write() -> None:
        summary["wall_s"] = round(time.perf_counter() - t_start, 1)
        summary["ok"] = all(summary["stages"].get(s, {}).get("ok", False) for s in STAGES)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))

    def timeout_for(stage: str) -> float:
        later = sum(cfg["floor"][s] for s in STAGES[STAGES.index(stage) + 1:])
        left = deadline - time.perf_counter() - later
        return max(min(cfg["cap"].get(stage, left), left), cfg["floor"][stage])

    def report(rec: dict, name: str, figures) -> None:
        """figures(rec) parses the stage's results into rec and sets rec["ok"]; an error there fails this stage only."""
        try:
            figures(rec)
        except Exception as exc:
            rec.update(ok=False, error=repr(exc)[:300])
        summary["stages"][name] = rec
        write()
        print(f"[gpu_check] {name}: {'ok' if rec.get('ok') else 'FAILED'} (rc {rec['rc']}, {rec['wall_s']} s; "
              f"log {rec['log']})", flush=True)

    # 1. the cuda tests: every test file that marks tests `cuda` (collecting the whole suite costs ~10 s here)
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.cuda" in p.read_text())
    (out / "pytest.xml").unlink(missing_ok=True)  # a stale report must not stand in for a crashed run
    stage = Stage("pytest", [py, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-p", "no:cacheprovider",
                             f"--junitxml={out / 'pytest.xml'}", *files], out, env)

    def pytest_figures(rec: dict) -> None:
        counts = junit_counts(out / "pytest.xml") if not rec["timed_out"] else None
        rec.update(counts or {})
        # on the CPU every cuda test must skip (and none fail); on CUDA they must run and pass
        rec["ok"] = bool(rec["rc"] == 0 and counts and counts["failed"] == counts["errors"] == 0
                         and counts["tests"] > 0
                         and (counts["skipped"] == counts["tests"] if smoke else counts["passed"] > 0))
    report(stage.run(timeout_for("pytest")), "pytest", pytest_figures)

    # 2. training steps/s: naive eager against the fast paths, measured in the same run
    stage = Stage("bench_train", [py, "tools/bench_train.py", *cfg["bench_train"]], out, env)

    def bench_train_figures(rec: dict) -> None:
        bench = rec["result"] = last_json(stage.text(), "naive_steps_per_s")
        rec["ok"] = bool(rec["rc"] == 0 and bench and bench["naive_steps_per_s"] > 0 and bench["best_steps_per_s"] > 0)
        if bench and not smoke:  # the goal on one H100-class GPU
            rec["goals"] = {"best_ge_150_steps_per_s": bench["best_steps_per_s"] >= 150,
                            "best_ge_3x_naive": bench.get("ratio", 0) >= 3}
    report(stage.run(timeout_for("bench_train")), "bench_train", bench_train_figures)
    bench = summary["stages"]["bench_train"].get("result")

    # 3. the array metrics against the plain reference
    stage = Stage("bench_metrics", [py, "tools/bench_metrics.py", *cfg["bench_metrics"]], out, env)

    def bench_metrics_figures(rec: dict) -> None:
        result = last_json(stage.text(), "speedup_vs_reference")
        rec.update(result=result, gpu_path=False)
        rec["ok"] = bool(rec["rc"] == 0 and result and result["within_tolerance"] and result["seconds_ours"] >= 0)
    report(stage.run(timeout_for("bench_metrics")), "bench_metrics", bench_metrics_figures)

    # 4. the torch metrics on the device against the numpy path (issue "metric suite >= 100x": GPU figures)
    stage = Stage("bench_tensor", [py, "tools/bench_tensor_metrics.py", *cfg["bench_tensor"]], out, env)

    def bench_tensor_figures(rec: dict) -> None:
        result = rec["result"] = last_json(stage.text(), "per_metric")
        want = "cpu" if smoke else "cuda"
        rec["ok"] = bool(rec["rc"] == 0 and result and result["device"].startswith(want)
                         and all(m["torch_s"] > 0 for m in result["per_metric"].values()))
    report(stage.run(timeout_for("bench_tensor")), "bench_tensor", bench_tensor_figures)

    # 5. SAE-12 on 3D-Shapes with the fastest Trainer setting, sized to the time left, then the metric suite
    timeout = timeout_for("train")
    setting = training_setting(bench, cuda=not smoke)
    plan = plan_steps(setting, cfg, timeout, train_s)
    cmd = [py, "-m", "causalrep.run", "specs/sae12.yaml", "--out", str(out / "runs"), "--no-progress",
           *cfg["train"], "--set", "track.kind=jsonl", "--set", f"train.precision={setting['precision']}",
           "--set", f"train.channels_last={str(setting['channels_last']).lower()}",
           "--set", f"train.compile={str(setting['compile']).lower()}", "--set", f"train.steps={plan['steps']}",
           "--set", f"evaluate.metrics={METRICS}"]
    stage = Stage("train", cmd, out, env)
    watch = TrainWatch(stage.log)

    def train_figures(rec: dict) -> None:
        rec.update(setting=setting, plan=plan, run_dir=str(watch.run_dir) if watch.run_dir else None,
                   **watch.figures(), untimed_s=watch.untimed_s(rec["wall_s"]))
        metrics_path = watch.run_dir / "metrics.json" if watch.run_dir else None
        rec["metrics"] = json.loads(metrics_path.read_text()) if metrics_path and metrics_path.is_file() else None
        rec["ok"] = bool(rec["rc"] == 0 and rec["metrics"] and "dci_disentanglement" in rec["metrics"]
                         and rec["steps_per_s"])
    report(stage.run(timeout, poll=watch.poll), "train", train_figures)

    write()
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
