"""docs/results.md's tables are what `python -m causalrep.table results/<claim>` prints from the committed runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from causalrep import table as tb

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = sorted(p.parent for p in (ROOT / "results").glob("*/table.yaml"))


def test_there_are_committed_results():
    assert CLAIMS, "no results/<claim>/table.yaml"


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.name for c in CLAIMS])
def test_results_md_holds_the_regenerated_table_byte_for_byte(claim, tmp_path):
    assert tb.main([str(claim), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "table.md").read_text()
    assert text in (ROOT / "docs" / "results.md").read_text(), f"docs/results.md lacks the table of {claim.name}"
    # and the copy committed beside the runs is the same
    assert (claim / "table.md").read_text() == text
