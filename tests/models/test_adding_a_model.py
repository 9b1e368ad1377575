"""docs/models.md "Adding a model": its worked example is one file that registers a spec kind and a model, and the
contract test covers the new kind with no other edit. The example runs in subprocesses (as a pytest plugin, i.e.
imported before collection, as causalrep/models/__init__.py would import it), so its registration never leaks into
this test session."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def example_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "models.md").read_text(), flags=re.S)
    assert len(blocks) == 1, f"docs/models.md: expected one python block (the worked example), found {len(blocks)}"
    return blocks[0]


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "sparse_ae_example.py").write_text(example_source())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


# run in the same pytest subprocess as the contract test: the worked example's spec and loss
EXAMPLE_TEST = """
import pytest
import torch

import sparse_ae_example  # noqa: F401  (registered by -p already)
from causalrep.build import build_model
from causalrep.errors import SpecError
from causalrep.models.base import reconstruction_loss
from conftest import tiny_spec


def test_the_worked_example_builds_from_a_spec_and_its_loss_is_the_documented_one():
    model = build_model(tiny_spec("sparse_ae", l1=0.5)).eval()
    assert type(model).__name__ == "SparseAE" and model.l1 == 0.5 and model.can("reconstruct")
    x = torch.rand(3, 1, 16, 16)
    out = model(x)
    u = model.encode(x)
    rec = reconstruction_loss(model.decode_logits(u), x, "bce")
    assert torch.allclose(out.loss, rec + 0.5 * u.abs().sum(1).mean())
    with pytest.raises(SpecError, match=r"^model.l1: expected a number >= 0, got -1.0"):
        tiny_spec("sparse_ae", l1=-1.0)  # its range, named by key path like every built-in key
"""


def test_the_contract_test_covers_the_worked_example_with_no_other_edit(tmp_path):
    (tmp_path / "test_sparse_ae_example.py").write_text(EXAMPLE_TEST)
    res = run(["-m", "pytest", "-q", "-p", "sparse_ae_example", "tests/models/test_contract.py", "-k", "sparse_ae",
               str(tmp_path / "test_sparse_ae_example.py"), "-p", "no:cacheprovider", "--rootdir", str(ROOT)],
              tmp_path)
    # every-kind tests (unknown capability, forward/backward, round trip), the capabilities an AE declares
    # (reconstruct, hybrid, do_noise, do_value): 3 + 4, and the example's own test
    assert res.returncode == 0 and re.search(r"\b8 passed\b", res.stdout), res.stdout[-3000:] + res.stderr[-2000:]
