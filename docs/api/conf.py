"""Sphinx configuration of the API reference (``make docs``; HTML in ``docs/_build/html``).

The pages are written by hand (one per public module or subpackage) and their contents come from
the docstrings through autodoc; napoleon reads the Google/NumPy-style sections.
"""

import os
import sys

# Document the source tree this file belongs to, installed or not.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
sys.path.insert(0, ROOT)

import pyro_mcvae  # noqa: E402

project = "pyro_mcvae"
author = "pyro_mcvae contributors"
copyright = "pyro_mcvae contributors"
release = pyro_mcvae.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Every member is documented on the page of the module that defines it (``:members:`` on the
# module's ``automodule``). A package page shows the package docstring only (no ``:members:``),
# so a name a package re-exports is described once.
autodoc_default_options = {
    "undoc-members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autoclass_content = "class"  # no __init__ has its own docstring; the class docstring says it all

napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_ivar = True  # "Attributes:" sections as fields: no second description of a field

# All the package's dependencies are installed with it; only mock what a fresh checkout may lack.
autodoc_mock_imports = []

exclude_patterns = ["_build"]
templates_path = []
html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": "Multi-component VAEs with Markov random field latents, on Pyro"}


def drop_foreign_inherited_docstrings(app, what, name, obj, options, lines):
    """Leave a method or property that inherits its docstring from torch or Pyro undescribed.

    autodoc would show, say, ``torch.nn.Module.forward``'s generic text under every ``forward``
    here; a docstring inherited from a class of this package (a callback hook, an experiment's
    step) is kept.
    """
    if what not in ("method", "property"):
        return
    parts = name.split(".")
    for i in range(len(parts) - 2, 0, -1):
        owner = sys.modules.get(".".join(parts[:i]))
        if owner is not None:
            break
    else:
        return
    for part in parts[i:-1]:
        owner = getattr(owner, part, None)
    if not isinstance(owner, type):
        return
    for klass in owner.__mro__:
        member = klass.__dict__.get(parts[-1])
        if member is None:
            continue
        if getattr(getattr(member, "fget", member), "__doc__", None):
            if not klass.__module__.startswith("pyro_mcvae"):
                lines.clear()
            return


def setup(app):
    app.connect("autodoc-process-docstring", drop_foreign_inherited_docstrings)
