"""The package is layered by stage: a stage imports only the stages before it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import histodetect

PACKAGE = Path(histodetect.__file__).parent
STAGES = [
    "slides",
    "annotations",
    "cohort",
    "fit",
    "training",
    "features",
    "mil",
    "detection",
    "points",
    "evaluation",
    "config",
]
SHARED = {"errors", "io", "columns", "runner", "testdata", "worker"}


def _imports(path: Path) -> set[str]:
    """Modules of histodetect that ``path`` imports (absolute, ``histodetect.`` dropped)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.removeprefix("histodetect.") for n in names if n.startswith("histodetect.")}
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_lives_in_a_stage_or_is_shared() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == SHARED
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(STAGES)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_stage_imports_a_later_one(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    own = STAGES.index(rel.parts[0]) if len(rel.parts) > 1 else -1
    for module in _imports(path):
        head = module.split(".")[0]
        if head in SHARED:
            continue
        assert head in STAGES, f"{rel} imports histodetect.{module}, which is no stage"
        assert STAGES.index(head) <= own, f"{rel} (stage {own}) imports later stage {module}"


SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"
NETWORK_JOBS = {
    "train_fold.py", "infer_slide.py", "extract_features.py", "pretrain_encoder.py",
    "train_mil.py", "mil_ensemble.py", "mil_attention.py", "mil_top_tiles.py",
    "mil_decision.py", "predict_mil.py",  # read MIL model files (torch.load)
}  # fmt: skip


@pytest.mark.parametrize(
    "script", sorted(p.name for p in SCRIPTS.glob("*.py") if p.name not in NETWORK_JOBS)
)
def test_only_the_network_jobs_import_torch(script: str) -> None:
    """Every job pays for its imports (torch: 3 s, timm another 4 s); the others need none."""
    modules = sorted(f"histodetect.{m}" for m in _imports(SCRIPTS / script))
    code = f"import sys, {', '.join(modules)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False", f"{script} imports torch through {modules}"
