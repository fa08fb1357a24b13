"""tools/layers.py: the layering check finds an import that goes up, a cycle and an unplaced module, and the
package itself passes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("layers_tool", ROOT / "tools" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_passes_and_every_module_is_placed():
    problems, modules, imports = _tool().check(ROOT / "csst_edge")
    assert problems == [] and modules > 50 and imports > 100


def test_an_upward_import_a_cycle_and_an_unplaced_module_are_found(tmp_path):
    pkg = tmp_path / "csst_edge"
    for folder in ("runtime", "train", "extras"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    # a lazy import inside a function counts: the torch-free runtime must not reach the trainer
    (pkg / "runtime" / "loop.py").write_text("def f():\n    from csst_edge.train import trainer\n")
    (pkg / "train" / "trainer.py").write_text("from . import data\n")
    (pkg / "train" / "data.py").write_text("from csst_edge.train import trainer\n")
    (pkg / "extras" / "x.py").write_text("")
    problems, _, _ = _tool().check(pkg)
    assert "up: csst_edge.runtime.loop imports csst_edge.train.trainer (train is above runtime)" in problems
    assert "cycle: csst_edge.train.data -> csst_edge.train.trainer" in problems
    assert "unplaced: extras (add it to LAYERS in tools/layers.py)" in problems
