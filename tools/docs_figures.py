"""Draw the documentation's figures (SVG, committed under ``docs/assets/``).

``python tools/docs_figures.py`` rewrites ``docs/assets/episode.svg`` (an N-way episode becoming an
NM-way one) and ``docs/assets/inference.svg`` (SLA+SI and SLA+AG read off the joint logits). Needs
matplotlib (the ``dev`` or ``plot`` extra). The files are deterministic: no date, a fixed hash salt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "docs" / "assets"
GLYPHS = ("F", "R", "G")  # asymmetric letters, so that each rotation is visible
COLOURS = ("#1f77b4", "#d62728", "#2ca02c")
M = 4


def _tile(ax: plt.Axes, x: float, y: float, glyph: str, angle: int, colour: str, label: str) -> None:
    ax.add_patch(Rectangle((x - 0.42, y - 0.42), 0.84, 0.84, facecolor="white", edgecolor=colour, linewidth=2))
    ax.text(x, y + 0.02, glyph, rotation=angle, ha="center", va="center", fontsize=22, fontweight="bold",
            color=colour)
    ax.text(x, y - 0.62, label, ha="center", va="center", fontsize=9, color="#333333")


def episode(path: Path) -> None:
    """A 3-way 1-shot support set, its 4 rotations each, relabelled y*M + j: a 12-way episode."""
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    ax.set_xlim(-0.9, 8.9)
    ax.set_ylim(-0.2, 4.4)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.text(0.3, 4.05, "N-way episode (N = 3)", ha="center", fontsize=11, fontweight="bold")
    ax.text(5.7, 4.05, "NM-way episode (M = 4 rotations: 12 classes)", ha="center", fontsize=11,
            fontweight="bold")
    for y, (glyph, colour) in enumerate(zip(GLYPHS, COLOURS)):
        row = 2.9 - 1.3 * y
        _tile(ax, 0.3, row, glyph, 0, colour, f"class y = {y}")
        for j in range(M):
            _tile(ax, 3.6 + 1.4 * j, row, glyph, 90 * j, colour, f"{y}·4+{j} = {y * M + j}")
    for j in range(M):
        ax.text(3.6 + 1.4 * j, 3.6, f"t{j + 1}: {90 * j}°", ha="center", fontsize=9, color="#555555")
    ax.add_patch(FancyArrowPatch((1.05, 1.6), (2.75, 1.6), arrowstyle="-|>", mutation_scale=18, linewidth=1.5,
                                 color="#444444"))
    ax.text(1.9, 1.85, "x M", ha="center", fontsize=10)
    ax.text(1.9, 1.2, "label (y, j)", ha="center", fontsize=9, color="#555555")
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)


def inference(path: Path) -> None:
    """The joint logits of one query's M views against the NM classes; SLA+SI reads one cell per class,
    SLA+AG averages the diagonal cells (view j against class (i, j))."""
    n = 3
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 2.5))
    for ax, title, aggregate in ((axes[0], "SLA+SI: view 1 against classes (i, 1)", False),
                                 (axes[1], "SLA+AG: mean over j of view j against (i, j)", True)):
        ax.set_xlim(-0.5, n * M - 0.5)
        ax.set_ylim(M - 0.5, -1.6)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=10)
        for j in range(M):
            ax.text(-0.9, j, f"t{j + 1}(q)", ha="right", va="center", fontsize=8)
            for c in range(n * M):
                i, jj = divmod(c, M)
                used = (jj == j) if aggregate else (jj == 0 and j == 0)
                ax.add_patch(Rectangle((c - 0.45, j - 0.45), 0.9, 0.9, linewidth=0.5, edgecolor="#999999",
                                       facecolor=COLOURS[i] if used else "#f2f2f2", alpha=0.85 if used else 1))
        for i in range(n):
            ax.text(i * M + 1.5, -0.9, f"class {i}", ha="center", fontsize=8, color=COLOURS[i])
    fig.text(0.5, 0.02, "rows: the M views of one query; columns: the N·M joint classes (i, j), index i·M + j",
             ha="center", fontsize=9, color="#333333")
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    plt.rcParams["svg.hashsalt"] = "fewshot-sla"
    ASSETS.mkdir(parents=True, exist_ok=True)
    episode(ASSETS / "episode.svg")
    inference(ASSETS / "inference.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
