"""The API reference (``make docs``): Sphinx builds it from the docstrings with warnings as errors,
and every public module of the package has its place in it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "docs" / "api"
PACKAGE = REPO / "pyro_mcvae"


def public_modules() -> set[str]:
    """Dotted names of the package's modules and subpackages, without private (``_x``) ones and
    ``__main__`` entry points; read from the file tree, nothing imported."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        names.add(".".join(parts))
    return names


def documented_modules() -> set[str]:
    pattern = re.compile(r"^\.\. automodule:: (\S+)", re.MULTILINE)
    return {name for page in SOURCE.rglob("*.rst") for name in pattern.findall(page.read_text())}


def test_every_public_module_has_a_page():
    assert public_modules() - documented_modules() == set()
    assert documented_modules() - public_modules() == set()


def test_sphinx_builds_warning_free(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install -e '.[docs]')")
    out = tmp_path / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-j", "1", "-q", "-b", "html",
               "-d", str(tmp_path / "doctrees"), str(SOURCE), str(out)]
    build = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"sphinx failed:\n{build.stdout}\n{build.stderr}"
    assert "WARNING" not in build.stderr and "ERROR" not in build.stderr, build.stderr

    assert (out / "index.html").is_file()
    gmrf = (out / "models" / "gmrf.html").read_text(encoding="utf-8")
    for name in ("GMRFGuide", "GMRFPrior", "GMRFConfig"):
        assert f'id="pyro_mcvae.models.gmrf.{name}"' in gmrf, name
    for page in ("pyro_mcvae", "covariance", "distributions", "models", "infer", "mcmc", "nets", "data",
                 "metrics", "evaluate", "experiments", "infer/trainer", "infer/objectives", "models/registry"):
        assert (out / f"{page}.html").is_file(), page
