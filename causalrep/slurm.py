"""Jobs through submitit (launcher: slurm): the executor made from a sweep's `slurm:` section, and a submission loop
that starts each job once the job it waits for has succeeded. The only module that imports submitit.

submitit's API reference and examples (https://facebookincubator.github.io/submitit/api.html, examples.html; the
AutoExecutor and SlurmExecutor docstrings of submitit 1.5): AutoExecutor(folder, cluster=...) picks the
SlurmExecutor ("slurm": sbatch) or the LocalExecutor ("local": one process per job on this machine, every submitted
job started at once); update_parameters takes the shared keys (name, timeout_min, nodes, tasks_per_node,
cpus_per_task, gpus_per_node; None means unset) and one executor's keys prefixed by its name (slurm_partition,
slurm_mem, slurm_array_parallelism, slurm_additional_parameters, slurm_setup, local_setup), which the other executors
ignore; Executor.map_array(fn, *iterables) pickles fn(*args) once per item and submits them as one Slurm job array
(ids <array id>_<index>, at most slurm_array_parallelism running); Job.done() tells whether a job has ended, and
Job.exception() / Job.result() wait for it and give its error (FailedJobError with the traceback,
UncompletedJobError when it died without a result) or its return value.
"""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs

from .errors import SpecError, one_line
from .spec.sweep import SlurmSpec

try:
    import submitit
except ImportError:  # optional (pip install submitit, or causalrep[slurm]): only launcher: slurm needs it
    submitit = None

INSTALL = "pip install submitit (or pip install 'causalrep[slurm]')"
POLL_S = {"slurm": 15.0, "local": 1.0}  # seconds between looks at the running jobs (Job.done)
SUBMITIT_DEFAULT_PARALLELISM = 256  # _make_sbatch_string's array_parallelism default


def require(where: str) -> None:
    """SpecError naming the sweep's launcher key when submitit is not installed."""
    if submitit is None:
        raise SpecError(f"{where}: launcher", f"slurm needs the submitit package, which is not installed: {INSTALL}")


def parallelism(settings: SlurmSpec) -> int:
    """Most jobs running at once: the sweep's array_parallelism, else submitit's 256 on Slurm and the CPU cores
    divided by cpus_per_task with cluster: local (LocalExecutor starts every submitted job at once)."""
    if settings.array_parallelism is not None:
        return settings.array_parallelism
    if settings.cluster == "slurm":
        return SUBMITIT_DEFAULT_PARALLELISM
    return max(1, (os.cpu_count() or 1) // settings.cpus_per_task)


def make_executor(settings: SlurmSpec, folder: Path, *, name: str, where: str, pythonpath: str):
    """submitit.AutoExecutor for the settings; every job runs one task on one node, with `pythonpath` first on
    PYTHONPATH (so a job imports the same causalrep as the sweep, as the torchrun launcher's jobs do)."""
    require(where)
    export = f"export PYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}"
    setup = [*settings.setup, export]
    # max_num_timeout: the requeues a job that timed out gets (PicklingExecutor); AutoExecutor passes
    # <cluster>_-prefixed constructor arguments to the chosen executor only
    executor = submitit.AutoExecutor(folder=folder, cluster=settings.cluster,
                                     slurm_max_num_timeout=settings.max_requeue,
                                     local_max_num_timeout=settings.max_requeue)
    executor.update_parameters(
        name=name, timeout_min=settings.time_min, nodes=1, tasks_per_node=1, cpus_per_task=settings.cpus_per_task,
        gpus_per_node=settings.gpus_per_task,  # one task per job: --gpus-per-node, the form every Slurm accepts
        slurm_partition=settings.partition, slurm_mem=settings.mem,  # None: not set (AutoExecutor drops it)
        slurm_array_parallelism=parallelism(settings),
        slurm_additional_parameters=dict(settings.sbatch) or None,
        slurm_setup=setup, local_setup=setup)
    return executor


class Requeueable:
    """fn as a job callable that submitit requeues when the job is preempted or reaches its time limit: its
    SignalHandler checkpoints any callable with a `checkpoint` method, which returns the DelayedSubmission to run
    in the requeued job (as submitit.helpers.Checkpointable.checkpoint does): here the same call again, which
    continues the run from its last checkpoint."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def checkpoint(self, *args: Any) -> Any:
        return submitit.helpers.DelayedSubmission(self, *args)


@attrs.frozen
class Task:
    """One job to run: fn(*args), after the task `after` (a key) has succeeded."""

    key: str
    args: tuple
    after: str | None = None


def job_error(job) -> str | None:
    """None when the job succeeded and returned None; else one line: what the job returned (its own summary of
    an error), or the last line of the traceback submitit recorded (FailedJobError), or the first line of why the
    job never finished (UncompletedJobError: killed, out of memory, timed out too often); with the log's path."""
    exc = job.exception()  # waits for the job; None when fn returned
    if exc is None:
        result = job.result()
        return None if result is None else str(result)
    text = str(exc)
    if "with trace:" in text:  # FailedJobError: the traceback between two lines of dashes
        trace = [ln for ln in text.split("----------------------")[1].splitlines() if ln.strip()]
        line = trace[-1] if trace else text.splitlines()[0]
    else:
        line = text.splitlines()[0] if text else type(exc).__name__
    return f"{one_line(line, 300)} (job {job.job_id}; log {job.paths.stderr})"


def run_tasks(executor, fn: Callable[..., Any], tasks: Sequence[Task], *, limit: int, poll_s: float,
              on_submit: Callable[[Task, Any], None],
              on_end: Callable[[Task, str | None], None]) -> dict[str, str | None]:
    """Submit every task whose `after` task has succeeded (or that has none), those ready together as one array
    (Executor.map_array), at most `limit` running at once; wait (Job.done every poll_s) and submit the next ones as
    jobs end. A task whose `after` failed is not submitted: its error says so. Returns key -> error (None: done).
    Interrupted (Ctrl-C), it cancels the jobs still running, so that a rerun never races them."""
    job_fn = Requeueable(fn)
    order = {t.key: i for i, t in enumerate(tasks)}
    waiting = [t if t.after in order else attrs.evolve(t, after=None) for t in tasks]  # `after` outside: no wait
    running: list[tuple[Task, Any]] = []
    outcome: dict[str, str | None] = {}
    try:
        while waiting or running:
            ready, later = [], []
            for t in waiting:
                if t.after is None or (t.after in outcome and outcome[t.after] is None):
                    ready.append(t)
                elif t.after in outcome:  # it failed (or was not run): this one is not submitted
                    outcome[t.key] = f"not run: {t.after} failed"
                    on_end(t, outcome[t.key])
                else:
                    later.append(t)
            start, ready = ready[:max(0, limit - len(running))], ready[max(0, limit - len(running)):]
            if start:
                jobs = executor.map_array(job_fn, *zip(*(t.args for t in start)))
                for t, job in zip(start, jobs):
                    on_submit(t, job)
                running += zip(start, jobs)
            waiting = sorted((*ready, *later), key=lambda t: order[t.key])  # the plan's order
            ended = [(t, job) for t, job in running if job.done()]
            if not ended:
                time.sleep(poll_s)
                continue
            for t, job in ended:
                running.remove((t, job))
                outcome[t.key] = job_error(job)
                on_end(t, outcome[t.key])
    except KeyboardInterrupt:
        for _, job in running:
            job.cancel(check=False)
        raise
    return outcome
