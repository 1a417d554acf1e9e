"""The floors of the design hold: import-linter's contracts in pyproject.toml pass on the tree,
and a deliberate upward import (record -> sweep) in a copy of it breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess:
    # Run from the tree, so its packages are the ones analysed (grimp finds them on sys.path).
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_every_contract_is_kept_on_the_tree():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") >= 3


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    for part in ("retina", "study"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "study" / "record" / "scratch_upward.py").write_text("import study.sweep\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0
    assert "study.record.scratch_upward -> study.sweep" in proc.stdout
