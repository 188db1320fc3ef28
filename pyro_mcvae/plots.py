"""Figures. Matplotlib with the Agg backend, so they render without a display."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["arviz_chain_figures", "copula_pairplot", "copula_pairplot_grid", "image_grid", "save_figure"]

TRUE_COLOUR, GEN_COLOUR = "#1f77b4", "#ff7f0e"


def _draw_pairplot(axes, true: np.ndarray, generated: np.ndarray, max_points: int) -> None:
    """Fill an ``M x M`` grid of axes (see :func:`copula_pairplot`)."""
    m = true.shape[1]
    t, g = true[:max_points], generated[:max_points]
    bins = np.linspace(0, 1, 21)
    for r in range(m):
        for c in range(m):
            ax = axes[r, c]
            if r == c:
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


def _check_pair(true, generated, name: str = "generated"):
    true, generated = np.asarray(true), np.asarray(generated)
    if true.ndim != 3 or generated.ndim != 3 or true.shape[1:] != generated.shape[1:] or true.shape[2] != 2:
        raise ValueError(f"true and {name} must be (n, M, 2) arrays of the same M, got "
                         f"{true.shape} and {generated.shape}")
    return true, generated


def _legend(fig, note: str, title: str) -> None:
    handles = [plt.Line2D([], [], color=TRUE_COLOUR, lw=3), plt.Line2D([], [], color=GEN_COLOUR, lw=3)]
    fig.legend(handles, ["true (test)", "generated"], loc="upper right", ncol=2, frameon=False)
    fig.suptitle(title + "\n" + note, fontsize=10)


def copula_pairplot(true: np.ndarray, generated: np.ndarray, title: str = "", max_points: int = 1500):
    """Pairplot of every pair of components for both coordinates, true against generated.

    ``true``, ``generated``: ``(n, M, J)`` with ``J = 2``. Above the diagonal: coordinate 1
    (``x_k^1`` against ``x_l^1``); below: coordinate 2; on the diagonal: marginal histograms of
    both coordinates. Returns the figure.
    """
    true, generated = _check_pair(true, generated)
    m = true.shape[1]
    fig, axes = plt.subplots(m, m, figsize=(2.3 * m, 2.3 * m), squeeze=False)
    _draw_pairplot(axes, true, generated, max_points)
    _legend(fig, "upper: coordinate 1, lower: coordinate 2, diagonal: marginals", title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def copula_pairplot_grid(true: np.ndarray, generated: dict, title: str = "", columns: int = 3,
                         max_points: int = 1000):
    """One figure with a pairplot (as :func:`copula_pairplot`) per model.

    ``generated``: ``{model name: (n, M, 2) array}``; the pairplots fill ``columns`` per row.
    """
    if not generated:
        raise ValueError("generated must name at least one model")
    checked = {name: _check_pair(true, g, name)[1] for name, g in generated.items()}
    true = np.asarray(true)
    m = true.shape[1]
    rows = -(-len(checked) // columns)
    cols = min(columns, len(checked))
    fig = plt.figure(figsize=(2.0 * m * cols, 2.0 * m * rows + 0.9), layout="constrained")
    subfigs = np.atleast_2d(fig.subfigures(rows, cols, squeeze=False))
    for sub, (name, g) in zip(subfigs.ravel(), checked.items()):
        axes = sub.subplots(m, m, squeeze=False)
        _draw_pairplot(axes, true, g, max_points)
        sub.suptitle(name, fontsize=12, fontweight="bold")
    for sub in subfigs.ravel()[len(checked):]:
        sub.set_visible(False)
    _legend(fig, "per model: upper triangle coordinate 1, lower coordinate 2, diagonal marginals", title)
    return fig


def image_grid(images, row_labels=None, title: str = "", pad: int = 2, scale: float = 0.45):
    """Images ``(rows, cols, C, H, W)`` (tensor or array, values in [0, 1], ``C`` 1 or 3) as one
    mosaic, one labelled row per entry of ``row_labels``. Returns the figure."""
    grid = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float32)
    if grid.ndim != 5 or grid.shape[2] not in (1, 3):
        raise ValueError(f"images must be (rows, cols, C, H, W) with C 1 or 3, got {grid.shape}")
    if row_labels is not None and len(row_labels) != grid.shape[0]:
        raise ValueError(f"need one label per row ({grid.shape[0]}), got {len(row_labels)}")
    rows, cols, c, h, w = grid.shape
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), dtype=np.float32)
    tiles = np.clip(grid, 0, 1).transpose(0, 1, 3, 4, 2)  # (rows, cols, H, W, C)
    for r in range(rows):
        for col in range(cols):
            y, x = pad + r * (h + pad), pad + col * (w + pad)
            canvas[y:y + h, x:x + w] = tiles[r, col]  # C = 1 broadcasts to grey
    fig, ax = plt.subplots(figsize=(scale * cols + 1.2, scale * rows + 0.5))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(rows)] if row_labels is not None else [])
    if row_labels is not None:
        ax.set_yticklabels(row_labels, fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _curve_points(rows: list[dict], column: str) -> list[tuple[float, float, float]]:
    """``(step, minutes, value)`` of the rows that hold ``column``."""
    return [(r["step"], r["seconds"] / 60, r[column]) for r in rows if r.get(column) is not None]


def _curves_figure(series: dict, title: str, chance: float | None, figsize, legend_axis: int,
                   legend_fontsize: int, ylabel: str | None = None):
    """``{label: points}`` against steps (left) and wall-clock minutes (right), the legend on
    axis ``legend_axis``."""
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True)
    for label, points in series.items():
        steps, minutes, values = zip(*points)
        axes[0].plot(steps, values, marker="o", markersize=3, label=label)
        axes[1].plot(minutes, values, marker="o", markersize=3, label=label)
    for ax, xlabel in zip(axes, ("training steps", "wall-clock minutes (evaluation included)")):
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    if ylabel:
        axes[0].set_ylabel(ylabel)
    axes[legend_axis].legend(fontsize=legend_fontsize)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def learning_curve_figure(rows: list[dict], columns: dict, title: str = "", chance: float | None = None):
    """Learning curves from :class:`~pyro_mcvae.infer.callbacks.LearningCurve` rows: each column
    (``{column: label}``) against steps (left) and wall-clock minutes (right); ``chance``: a
    dashed reference line. Returns the figure."""
    if not rows:
        raise ValueError("no learning-curve rows to plot")
    missing = [c for c in columns if not any(r.get(c) is not None for r in rows)]
    if missing:
        raise ValueError(f"no rows hold the column(s) {missing}; columns: {sorted(rows[0])}")
    series = {label: _curve_points(rows, column) for column, label in columns.items()}
    return _curves_figure(series, title, chance, (9, 3.4), legend_axis=0, legend_fontsize=8)


def curve_comparison_figure(runs: dict, column: str, title: str = "", chance: float | None = None,
                            ylabel: str | None = None):
    """One learning-curve column of several runs (``{label: rows}``, rows as for
    :func:`learning_curve_figure`) against steps (left) and wall-clock minutes (right), one line
    per run: how runs compare at equal steps and at equal time. Returns the figure."""
    if not runs:
        raise ValueError("no runs to compare")
    series = {label: _curve_points(rows, column) for label, rows in runs.items()}
    empty = [label for label, points in series.items() if not points]
    if empty:
        raise ValueError(f"run(s) {empty} have no rows with the column {column!r}")
    return _curves_figure(series, title, chance, (10, 3.8), legend_axis=1, legend_fontsize=7,
                          ylabel=ylabel or column)


def arviz_chain_figures(netcdf, prefix: str | Path, coordinates: int = 2, rank_chains: int = 4) -> list[Path]:
    """Trace, rank and energy plots of saved MCMC chains, drawn by ArviZ from the netCDF file
    alone (what a user of ``arviz.from_netcdf`` would draw): ``<prefix>_trace.png`` (the energy,
    ``sqnorm`` and the first ``coordinates`` latent coordinates), ``<prefix>_rank.png`` (rank
    histograms of the first ``rank_chains`` chains: flat when the chains mix) and
    ``<prefix>_energy.png`` (marginal and transition energy distributions with the BFMI). Returns
    the paths."""
    import arviz as az

    data = az.from_netcdf(str(netcdf))
    prefix = Path(prefix)
    coords = {"z_dim_0": list(range(min(coordinates, data.posterior["z"].shape[-1])))}
    names = ["energy", "sqnorm", "z"]
    paths = []
    axes = az.plot_trace(data, var_names=names, coords=coords, compact=True, figsize=(10, 7))
    fig = axes.ravel()[0].figure
    fig.suptitle(f"{data.posterior.sizes['chain']} chains x {data.posterior.sizes['draw']} draws", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, prefix.with_name(prefix.name + "_trace.png")))
    shown = min(rank_chains, data.posterior.sizes["chain"])  # one rank histogram per chain: a few stay readable
    axes = az.plot_rank(data, var_names=names, coords=coords | {"chain": list(range(shown))}, kind="bars",
                        figsize=(12, 2.2 * shown))
    fig = np.ravel(axes)[0].figure
    fig.suptitle(f"rank histograms of the first {shown} chains (uniform when the chains mix)", fontsize=10)
    paths.append(save_figure(fig, prefix.with_name(prefix.name + "_rank.png")))
    ax = az.plot_energy(data, bfmi=False, figsize=(6, 4))  # one legend line per chain is too many
    bfmi = np.asarray(az.bfmi(data))
    ax.set_title(f"BFMI of {bfmi.size} chains: min {bfmi.min():.2f}, median {np.median(bfmi):.2f} "
                 "(below 0.3: poor exploration)", fontsize=9)
    paths.append(save_figure(ax.figure, prefix.with_name(prefix.name + "_energy.png")))
    plt.close("all")
    return paths
