"""Human-readable summaries of a cross-validated run: :func:`results_table` (the plain-text table
``emo fuse train`` prints)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emo.fuse.cv import CVResult


def results_table(result: "CVResult", task: str) -> str:
    """Plain-text table: one row per fold (its test size and metrics), then mean ± std over folds,
    pooled out-of-fold metrics and, with a held-out test set, the test metrics. ``task`` is
    accepted for the callers' symmetry; the columns are the metrics present."""
    keys = [k for k in ("uar", "accuracy", "waf", "valence_mse", "valence_ccc", "vad_mse", "vad_ccc", "mer2023_score")
            if k in result.summary["mean"]]
    w = max([len(r["name"]) for r in result.folds] + [10])
    lines = [f"{'fold':<{w}}  {'n':>5}  " + "  ".join(f"{k:>13}" for k in keys)]
    for r in result.folds:
        lines.append(f"{r['name']:<{w}}  {r['n_test']:>5}  " + "  ".join(f"{r['metrics'][k]:>13.4f}" for k in keys))
    lines.append(f"{'mean ± std':<{w}}  {'':>5}  " + "  ".join(f"{result.summary['mean'][k]:>6.4f}±{result.summary['std'][k]:.4f}" for k in keys))
    lines.append(f"{'pooled':<{w}}  {len(result.oof['index']):>5}  " + "  ".join(f"{result.pooled[k]:>13.4f}" for k in keys))
    if result.test and "metrics" in result.test:
        lines.append(f"{'test':<{w}}  {len(result.test['index']):>5}  " + "  ".join(f"{result.test['metrics'][k]:>13.4f}" for k in keys))
    return "\n".join(lines)


def repeats_table(summary: dict[str, Any]) -> str:
    """Plain-text lines for ``--repeats``: mean ± std over the repeats of each pooled metric, then the
    95 % group-bootstrap interval of the repeat-averaged primary metric (see :func:`emo.fuse.train.repeats_summary`)."""
    keys = [k for k in ("uar", "accuracy", "waf", "valence_mse", "valence_ccc", "vad_mse", "vad_ccc", "mer2023_score") if k in summary["metrics"]]
    lines = [f"over {summary['n']} repeats (pooled out-of-fold, mean ± std): " +
             ", ".join(f"{k} {summary['metrics'][k]['mean']:.4f} ± {summary['metrics'][k]['std']:.4f}" for k in keys)]
    ci = summary["interval"]
    lines.append(f"{int(ci['level'] * 100)}% bootstrap interval of {ci['metric']} (repeat mean, {ci['n_boot']} replicates over "
                 f"{ci['n_groups']} {ci['group']} groups): {ci['estimate']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]")
    return "\n".join(lines)
