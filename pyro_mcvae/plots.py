"""Figures. Matplotlib with the Agg backend, so they render without a display."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["copula_pairplot", "save_figure"]

TRUE_COLOUR, GEN_COLOUR = "#1f77b4", "#ff7f0e"


def copula_pairplot(true: np.ndarray, generated: np.ndarray, title: str = "", max_points: int = 1500):
    """Pairplot of every pair of components for both coordinates, true against generated.

    ``true``, ``generated``: ``(n, M, J)`` with ``J = 2``. Above the diagonal: coordinate 1
    (``x_k^1`` against ``x_l^1``); below: coordinate 2; on the diagonal: marginal histograms of
    both coordinates. Returns the figure.
    """
    true, generated = np.asarray(true), np.asarray(generated)
    m = true.shape[1]
    fig, axes = plt.subplots(m, m, figsize=(2.3 * m, 2.3 * m), squeeze=False)
    t, g = true[:max_points], generated[:max_points]
    for r in range(m):
        for c in range(m):
            ax = axes[r, c]
            if r == c:
                bins = np.linspace(0, 1, 21)
                for j, ls in ((0, "-"), (1, "--")):
                    ax.hist(true[:, r, j], bins, histtype="step", color=TRUE_COLOUR, ls=ls, density=True)
                    ax.hist(generated[:, r, j], bins, histtype="step", color=GEN_COLOUR, ls=ls, density=True)
                ax.set_title(f"x{r + 1}", fontsize=9)
            else:
                j = 0 if c > r else 1  # upper: coordinate 1, lower: coordinate 2
                ax.scatter(t[:, c, j], t[:, r, j], s=2, alpha=0.35, color=TRUE_COLOUR, lw=0)
                ax.scatter(g[:, c, j], g[:, r, j], s=2, alpha=0.35, color=GEN_COLOUR, lw=0)
                ax.text(0.02, 0.9, f"j={j + 1}", transform=ax.transAxes, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Line2D([], [], color=TRUE_COLOUR, lw=3), plt.Line2D([], [], color=GEN_COLOUR, lw=3)]
    fig.legend(handles, ["true (test)", "generated"], loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title + "\nupper: coordinate 1, lower: coordinate 2, diagonal: marginals", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
