"""The package's layer order, checked on the source: a module imports only from its own
subpackage and from lower layers (docs/architecture.md). Also: importing a data module stays
cheap (the lazy facades load no model code)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pyro_mcvae"

# Lowest first. A top-level module or subpackage of pyro_mcvae -> its layer.
LAYERS = [
    {"validation", "_lazy", "_precision", "provenance", "plots"},  # leaf utilities
    {"_io", "covariance", "parallel", "mcmc"},  # the block construction, atomic files, the HMC sampler
    {"data", "nets", "distributions"},
    {"models"},
    {"infer"},
    {"metrics", "samplers"},  # metrics; post-hoc latent samplers (consumers of the models)
    {"evaluate"},
    {"experiments"},
    {"cli"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def unit_of(path: Path) -> str:
    """The top-level unit (module or subpackage) a source file belongs to."""
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def imported_units(path: Path) -> set[str]:
    """Top-level pyro_mcvae units a file imports (absolute or relative, anywhere in the file)."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]  # e.g. ("pyro_mcvae", "models")
    if path.name == "__init__.py":
        package = path.relative_to(ROOT.parent).parts[:-1]
    units = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target[:1] == ["pyro_mcvae"]:
                if len(target) > 1:
                    units.add(target[1])
                else:  # "from pyro_mcvae import x" / "from . import x" at the top
                    units.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "pyro_mcvae" and len(parts) > 1:
                    units.add(parts[1])
    return units


def lazy_targets(path: Path) -> set[str]:
    """Units named by a lazy facade's export table (strings like ``"..mcmc"`` or ``".models"``)."""
    if path.name != "__init__.py":
        return set()
    units = set()
    depth = len(path.relative_to(ROOT).parts) - 1  # 0 for pyro_mcvae/__init__.py
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("."):
            dots = len(node.value) - len(node.value.lstrip("."))
            name = node.value.lstrip(".").split(".")[0]
            if dots - 1 == depth and name:  # reaches the top level of the package
                units.add(name)
    return units


def test_every_unit_has_a_layer():
    units = {unit_of(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert units <= set(LAYER_OF), f"place these in LAYERS (and in docs/architecture.md): {units - set(LAYER_OF)}"


def test_modules_import_only_from_lower_layers():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        unit = unit_of(path)
        if unit == "__init__":
            continue  # the package facade exports from everywhere, lazily
        for other in (imported_units(path) | lazy_targets(path)) - {unit, "__version__"}:
            if other in LAYER_OF and LAYER_OF[other] >= LAYER_OF[unit]:
                bad.append(f"{path.relative_to(ROOT.parent)} ({unit}, layer {LAYER_OF[unit]}) imports "
                           f"{other} (layer {LAYER_OF[other]})")
    assert not bad, "layer order broken:\n" + "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    """The import reader finds relative and absolute imports of higher layers."""
    fake = ROOT / "models" / "_probe_for_test.py"
    fake.write_text("from ..infer import fit\nimport pyro_mcvae.experiments.copula\n")
    try:
        assert imported_units(fake) == {"infer", "experiments"}
    finally:
        fake.unlink()


def test_importing_the_copula_data_loads_neither_torch_nor_pyro():
    """The copula data are NumPy: the lazy facades keep torch, Pyro and the models out (the
    import takes about 0.2 s instead of 2.2 s; timed in docs/architecture.md)."""
    code = ("import sys; import pyro_mcvae.data.copula; "
            "print(*(int(m in sys.modules) for m in ('torch', 'pyro', 'pyro_mcvae.models')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "0", "0"], f"torch, pyro, models imported: {out}"
