"""Golden values: every spec in specs/ at toy size reproduces tests/golden/values.json (tools/make_golden.py).

They pin today's numerics (20 fixed-seed CPU steps, a fixed evaluation) so that a refactor which should not
change the numbers provably does not; tests/golden/README.md has the rule for changing them on purpose.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_golden", ROOT / "tools" / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)

STORED = json.loads(make_golden.VALUES.read_text()) if make_golden.VALUES.is_file() else {}
REL, ABS = 1e-6, 1e-9
REGENERATE = "python tools/make_golden.py"


@pytest.fixture(scope="module")
def computed(tmp_path_factory) -> dict:
    """Every spec's values now, computed in one subprocess at the golden kernel level (make_golden.KERNEL_ENV):
    torch picks its CPU kernels at import, and this process's torch may run AVX512 ones, whose sums round
    differently from the AVX2 ones the values were written with."""
    out = tmp_path_factory.mktemp("golden") / "now.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_golden.py"), "--dump", str(out)],
                          env={**os.environ, **make_golden.KERNEL_ENV}, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0 and out.is_file(), f"make_golden.py --dump failed:\n{proc.stderr[-4000:]}"
    now = json.loads(out.read_text())
    assert now["machine"]["cpu_capability"] == make_golden.KERNEL_LEVEL, (
        f"the golden values are computed with torch's {make_golden.KERNEL_LEVEL} CPU kernels; this machine's torch ran "
        f"{now['machine']['cpu_capability']} ones under {make_golden.KERNEL_ENV} (a CPU without {make_golden.KERNEL_LEVEL}?)")
    return now


def differences(stored, now, where: str = "") -> list[str]:
    """Every place where `now` departs from `stored`: floats beyond rel=1e-6 / abs=1e-9, anything else exactly."""
    if isinstance(stored, dict) and isinstance(now, dict):
        out = [f"{where}.{k}: missing now" for k in stored if k not in now]
        out += [f"{where}.{k}: new (not stored)" for k in now if k not in stored]
        for k in stored:
            if k in now:
                out += differences(stored[k], now[k], f"{where}.{k}" if where else k)
        return out
    if isinstance(stored, list) and isinstance(now, list):
        if len(stored) != len(now):
            return [f"{where}: {len(now)} items, stored {len(stored)}"]
        return [d for i, (a, b) in enumerate(zip(stored, now)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(stored, float) or isinstance(now, float):
        if isinstance(stored, (int, float)) and isinstance(now, (int, float)) and not isinstance(stored, bool) \
                and math.isclose(now, stored, rel_tol=REL, abs_tol=ABS):
            return []
        return [f"{where}: {now!r}, stored {stored!r}"]
    return [] if stored == now else [f"{where}: {now!r}, stored {stored!r}"]


def test_every_spec_has_golden_values():
    specs = {p.stem for p in make_golden.spec_paths()}
    missing, stale = sorted(specs - set(STORED)), sorted(set(STORED) - specs)
    assert not missing and not stale, (
        f"tests/golden/values.json is out of date with specs/*.yaml (missing: {', '.join(missing) or '-'}; no longer "
        f"a spec: {', '.join(stale) or '-'}): run `{REGENERATE}` and commit the result")


@pytest.mark.parametrize("name", sorted(STORED))
def test_spec_reproduces_its_golden_values(name, computed):
    path = make_golden.SPECS_DIR / f"{name}.yaml"
    if not path.is_file():
        pytest.skip(f"specs/{name}.yaml is gone (test_every_spec_has_golden_values reports it)")
    now = computed["specs"][name]
    assert "error" not in now, f"{name} failed to build or run:\n{now.get('error')}"
    diff = differences(STORED[name], now["values"])
    shown = "\n  ".join(diff[:20]) + (f"\n  ... and {len(diff) - 20} more" if len(diff) > 20 else "")
    assert not diff, (f"{name}: {len(diff)} golden value(s) moved (rel {REL}, abs {ABS}):\n  {shown}\n"
                      f"A change that moves them on purpose regenerates them in its own commit saying why: "
                      f"`{REGENERATE} --spec {name}` (tests/golden/README.md){machine_note(computed['machine'])}")


def machine_note(here: dict) -> str:
    """If the values were written on another CPU or torch, say so: that alone can move the last bits."""
    recorded = json.loads(make_golden.MACHINE.read_text()) if make_golden.MACHINE.is_file() else None
    if recorded == here:
        return ""
    return (f"\nThe values were written on {recorded or 'an unrecorded machine'}; this is {here}. If the code at the "
            f"last commit that wrote them also moves here, the machine moved them: regenerate on this machine from "
            f"that commit and say so in the commit.")


def test_differences_reports_moved_missing_and_new_values():
    stored = {"a": 1.0, "b": [1, 2.0], "c": {"d": "x"}}
    assert differences(stored, {"a": 1.0 + 1e-9, "b": [1, 2.0], "c": {"d": "x"}}) == []
    assert differences(stored, {"a": 1.001, "b": [1], "c": {"e": "x"}}) == [
        "a: 1.001, stored 1.0", "b: 1 items, stored 2", "c.d: missing now", "c.e: new (not stored)"]
