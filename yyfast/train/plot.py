"""``curves.png``: loss and accuracy per epoch, raw and EMA, drawn with matplotlib's Agg backend."""
from __future__ import annotations

from typing import Dict, List

from .checkpoint import atomic_write


def plot_curves(history: List[Dict], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a no-op if a backend is already in use
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]

    def series(key):
        pts = [(e, h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    # Figure() directly (not pyplot): no global state, safe to call from any thread.
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label, style in (("train_loss", "train", "-"), ("test_loss", "test (raw)", "-"),
                              ("ema_test_loss", "test (EMA)", "--")):
        ax_loss.plot(*series(key), style, marker=".", label=label)
    for key, label, style in (("train_acc", "train", "-"), ("test_acc", "test (raw)", "-"),
                              ("ema_test_acc", "test (EMA)", "--")):
        xs, ys = series(key)
        ax_acc.plot(xs, [100 * y for y in ys], style, marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
