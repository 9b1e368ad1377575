"""Start `aim up` on loopback for an Aim repo, list the runs its web API serves, stop it; exit 0 iff >= 1 run.

Usage: python tools/check_aim_up.py --repo RUNS_DIR [--port P] [--timeout S]
RUNS_DIR is the folder holding `.aim/` (what AimTracker(repo=...) was given).

Endpoints used (aim/web/api/__init__.py mounts the API under /api):
  GET /api/projects/                    JSON, answers as soon as the server is up (readiness probe)
  GET /api/runs/search/run/?q=          the UI's run list; a stream of (uint32 len, key, uint32 len, value)
                                        pairs (aim/web/api/runs/utils.py: collect_streamable_data) that
                                        aim.storage.treeutils.decode_tree folds into {run_hash: {props, params, traces}}
  GET /api/experiments/                 JSON [{id, name, run_count}], read from the structured db (no index needed)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"  # loopback only, never 0.0.0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback URL built here)
        return resp.read()


def decode_run_stream(raw: bytes) -> dict:
    from aim.storage.treeutils import decode_tree  # the decoder Aim itself uses for these trees

    pairs, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("I", raw, i); key = raw[i + 4:i + 4 + n]; i += 4 + n
        (n,) = struct.unpack_from("I", raw, i); val = raw[i + 4:i + 4 + n]; i += 4 + n
        pairs.append((key, val))
    tree = decode_tree(iter(pairs)) if pairs else {}
    return {k: v for k, v in tree.items() if not str(k).startswith("progress")}


def aim_executable() -> str:
    sibling = Path(sys.executable).parent / "aim"
    return str(sibling) if sibling.exists() else (shutil.which("aim") or "aim")


def stop(proc: subprocess.Popen) -> None:
    """`aim up` runs uvicorn (+2 workers) as children; SIGTERM to `aim up` alone orphans them,
    so the server is started in its own session and the whole process group is signalled."""
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline and _group_alive(proc.pid):
            proc.poll()
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="folder that holds .aim/")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server (max 60)")
    args = ap.parse_args()
    repo = Path(args.repo).expanduser().resolve()
    port = args.port or free_port()
    timeout = min(max(args.timeout, 1.0), 60.0)
    result = {"server_answered": False, "runs_listed": 0}
    if not (repo / ".aim").is_dir():
        print(f"error: no Aim repo at {repo} (missing {repo / '.aim'})", file=sys.stderr)
        print(json.dumps(result))
        return 1

    base = f"http://{HOST}:{port}"
    log = tempfile.NamedTemporaryFile("w+", prefix="aim_up_", suffix=".log", delete=False)
    cmd = [aim_executable(), "up", "--repo", str(repo), "--host", HOST, "--port", str(port), "--read-only"]
    print("starting:", " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    runs: dict = {}
    try:
        deadline = t0 + timeout
        while time.time() < deadline and proc.poll() is None:
            try:
                get(f"{base}/api/projects/", timeout=2)
                result["server_answered"] = True
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        if not result["server_answered"]:
            log.seek(0)
            print(f"aim up did not answer on {base} within {timeout:.0f}s (exit code {proc.poll()}); log:\n"
                  + log.read()[-3000:], file=sys.stderr)
        else:
            print(f"server answered on {base} after {time.time() - t0:.1f}s", flush=True)
            # `aim up` indexes runs in a background thread right after start; retry until it has.
            while True:
                runs = decode_run_stream(get(f"{base}/api/runs/search/run/?q=&report_progress=false", 30))
                if runs or time.time() >= deadline:
                    break
                time.sleep(1.0)
            for run_hash, info in runs.items():
                props = info.get("props", {})
                traces = [f"{t['name']}[{t['context'].get('subset', '')}]"
                          for t in info.get("traces", {}).get("metric", [])]
                print(f"run {run_hash} experiment={props.get('experiment', {}).get('name')!r} "
                      f"name={props.get('name')!r} active={props.get('active')} metrics={traces}")
            for exp in json.loads(get(f"{base}/api/experiments/")):
                print(f"experiment {exp['name']!r}: run_count={exp['run_count']}")
            result["runs_listed"] = len(runs)
    finally:
        stop(proc)
        log.close()
        os.unlink(log.name)
    print(json.dumps(result), flush=True)
    return 0 if result["runs_listed"] >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
