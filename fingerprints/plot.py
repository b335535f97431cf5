"""The evidence picture: layer-by-layer similarity a person can read at a glance.

Left: similarity of every sampled layer of A against every sampled layer of B (centred
correlation of name-blind matched tensors); the matched pairs are outlined, so a copy shows a
bright diagonal (or a bright off-diagonal path when layers were dropped) and independent models a
uniform dark square. Right: the anchors' scores against the derived threshold.
"""

from __future__ import annotations

import io

import numpy as np

from . import verdict as V


def load_matplotlib():
    """pyplot on the Agg backend (no display). matplotlib (~1 s to import) loads with the first
    picture: most commands, and every comparison that neither alerts nor asks for --plot, never
    draw one."""
    import matplotlib

    matplotlib.use("Agg")  # chosen before pyplot loads
    import matplotlib.pyplot as plt

    return plt


def render_comparison_png(comparison) -> bytes:
    plt = load_matplotlib()

    fig, (ax_map, ax_bar) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})
    matrix = np.array(
        [[np.nan if v is None else v for v in row] for row in comparison.layer_matrix], dtype=float
    ) if comparison.layer_matrix else np.full((1, 1), np.nan)
    im = ax_map.imshow(matrix, vmin=-0.2, vmax=1.0, cmap="magma", aspect="auto", origin="upper")
    ax_map.set_xlabel(f"B layers ({_short(comparison.b)})")
    ax_map.set_ylabel(f"A layers ({_short(comparison.a)})")
    if comparison.layers_a:
        ax_map.set_yticks(range(len(comparison.layers_a)), comparison.layers_a)
        ax_map.set_xticks(range(len(comparison.layers_b)), comparison.layers_b)
        pos_a = {l: i for i, l in enumerate(comparison.layers_a)}
        pos_b = {l: i for i, l in enumerate(comparison.layers_b)}
        for pair in comparison.weights.get("layers", []):
            ax_map.add_patch(plt.Rectangle((pos_b[pair["b"]] - 0.5, pos_a[pair["a"]] - 0.5), 1, 1,
                                           fill=False, edgecolor="cyan", linewidth=1.5))
    ax_map.set_title("layer similarity (matched pairs outlined)")
    fig.colorbar(im, ax=ax_map, fraction=0.046, pad=0.04, label="centred correlation")

    labels, values = [], []
    emb = comparison.weights.get("embedding")
    if emb:
        labels.append("embedding")
        values.append(emb["score"])
    for pair in comparison.weights.get("layers", []):
        labels.append(f"A{pair['a']}→B{pair['b']}")
        values.append(pair["score"])
    if values:
        colors = ["#d62728" if v >= V.DERIVED_SCORE else "#7f7f7f" for v in values]
        ax_bar.barh(range(len(values)), values, color=colors)
        ax_bar.set_yticks(range(len(values)), labels)
        ax_bar.invert_yaxis()
    ax_bar.axvline(V.DERIVED_SCORE, color="black", linestyle="--", linewidth=1, label=f"derived ≥ {V.DERIVED_SCORE}")
    ax_bar.axvspan(-0.05, 0.05, color="#9ecae1", alpha=0.5, label="independent models")
    ax_bar.set_xlim(-0.2, 1.05)
    ax_bar.set_xlabel("similarity")
    ax_bar.legend(loc="lower right", fontsize=8)
    ax_bar.set_title("anchors")
    kinds = f" ({', '.join(comparison.kinds)})" if comparison.kinds else ""
    fig.suptitle(f"{comparison.verdict}{kinds} — confidence {comparison.confidence:.2f}, score {comparison.score:.3f}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]
