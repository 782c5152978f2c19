"""The soak run in one picture: the worker's RSS over time with the PostgreSQL restarts marked,
and turn latency p50/p95 per minute."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot(
    result: dict[str, Any],
    rss: Sequence[tuple[float, float]],
    restarts_s: Sequence[float],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    mem.plot([t / 60 for t, _ in rss], [v for _, v in rss], color="tab:blue")
    for i, t in enumerate(restarts_s):
        mem.axvline(t / 60, color="tab:red", ls=":", label="PostgreSQL restart" if i == 0 else None)
    mem.set(xlabel="minutes", ylabel="worker RSS (MB)", ylim=(0, None))
    mem.set_title(f"RSS, growth {result['rss_mb']['growth_pct']} %")
    if restarts_s:
        mem.legend(loc="lower right")
    minutes = result["turn_latency_ms"]["per_minute"]
    xs = [int(m) + 0.5 for m in minutes]
    for q, style in (("p50", "o-"), ("p95", "s-")):
        lat.plot(xs, [minutes[m][q] for m in minutes], style, label=q)
    lat.set(xlabel="minutes", ylabel="turn latency (ms)", ylim=(0, None))
    lat.set_title(f"turns per minute {round(result['turns'] / max(result['minutes'], 1e-9))}")
    lat.legend()
    fig.suptitle(
        f"soak: {result['profile']} profile, {result['db']}, {result['sessions']} sessions, "
        f"{result['minutes']:g} min; rows {result['rows_found']}/{result['rows_expected']}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
