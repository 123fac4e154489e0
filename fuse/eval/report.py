"""Human-readable summaries of a cross-validated run: :func:`results_table` (the plain-text table
``emo fuse train`` prints) and :func:`write_report` (``report.md`` with the metrics table,
per-class precision and recall and a confusion-matrix PNG, in every run directory; the pieces
researchers paste into papers).

Per-class scores come from the pooled out-of-fold confusion matrix ``C`` (rows = true class,
columns = predicted; :func:`emo.fuse.eval.metrics.classification_metrics`): precision
``C[c, c] / Σ_r C[r, c]``, recall ``C[c, c] / Σ_k C[c, k]``, F1 their harmonic mean
(scikit-learn's definitions); a score whose denominator is 0 (class never predicted, or absent)
is shown as ``–``, never as a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from emo.fsio import write_text, write_with

if TYPE_CHECKING:
    from emo.fuse.eval.cv import CVResult

#: Metric columns of the tables, in this order, where a run has them.
TABLE_METRICS = ("uar", "accuracy", "waf", "valence_mse", "valence_ccc", "vad_mse", "vad_ccc", "mer2023_score",
                 "ml_accuracy", "hamming_loss", "micro_f1", "macro_f1")


def results_table(result: "CVResult", task: str) -> str:
    """Plain-text table: one row per fold (its test size and metrics), then mean ± std over folds,
    pooled out-of-fold metrics and, with a held-out test set, the test metrics. ``task`` is
    accepted for the callers' symmetry; the columns are the metrics present."""
    keys = [k for k in TABLE_METRICS if k in result.summary["mean"]]
    w = max([len(r["name"]) for r in result.folds] + [10])
    lines = []
    proto = getattr(result, "protocol", None)
    if proto and proto.get("statement"):  # issue 23: the first line says how the numbers were obtained
        lines.append(proto["statement"])
    if getattr(result, "label", ""):
        lines.append(f"folds and pooled below: {result.label}")
    lines.append(f"{'fold':<{w}}  {'n':>5}  " + "  ".join(f"{k:>13}" for k in keys))
    for r in result.folds:
        lines.append(f"{r['name']:<{w}}  {r['n_test']:>5}  " + "  ".join(f"{r['metrics'][k]:>13.4f}" for k in keys))
    lines.append(f"{'mean ± std':<{w}}  {'':>5}  " + "  ".join(f"{result.summary['mean'][k]:>6.4f}±{result.summary['std'][k]:.4f}" for k in keys))
    lines.append(f"{'pooled':<{w}}  {len(result.oof['index']):>5}  " + "  ".join(f"{result.pooled[k]:>13.4f}" for k in keys))
    if result.test and "metrics" in result.test:
        lines.append(f"{'test':<{w}}  {len(result.test['index']):>5}  " + "  ".join(f"{result.test['metrics'][k]:>13.4f}" for k in keys))
    lines += [f"warning: {x}" for x in getattr(result, "warnings", [])]
    return "\n".join(lines)


def per_class_scores(confusion: Any) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` (float64 (C,), NaN where undefined) and
    ``support`` (int64 (C,), true samples per class) of a (C, C) confusion matrix (rows = true,
    columns = predicted).

    Raises:
        ValueError: not a square matrix of non-negative counts.
    """
    c = np.asarray(confusion, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"a confusion matrix must be a square matrix of non-negative counts, got shape {c.shape}")
    tp = np.diag(c)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(c.sum(0) > 0, tp / c.sum(0), np.nan)
        recall = np.where(c.sum(1) > 0, tp / c.sum(1), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.where(np.isnan(precision + recall), np.nan, 0.0))
    return {"precision": precision, "recall": recall, "f1": f1, "support": c.sum(1).astype(np.int64)}


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def metrics_markdown(metrics: Mapping[str, Any]) -> str:
    """The metrics table of a run's ``metrics.json`` as Markdown: one row per fold (test size,
    metrics), mean ± std over folds, pooled out-of-fold and, when present, held-out test metrics."""
    mean = metrics.get("mean", {})
    keys = [k for k in TABLE_METRICS if k in mean]
    lines = [_md_row(["fold", "n", *keys]), _md_row(["---"] + ["---:"] * (len(keys) + 1))]
    for f in metrics.get("folds", []):
        lines.append(_md_row([f["name"], f.get("n_test", ""), *[_num(f.get(k)) for k in keys]]))
    std = metrics.get("std", {})
    lines.append(_md_row(["**mean ± std**", "", *[f"{_num(mean.get(k))} ± {_num(std.get(k))}" for k in keys]]))
    pooled = metrics.get("pooled", {})
    lines.append(_md_row(["**pooled**", metrics.get("n", ""), *[_num(pooled.get(k)) for k in keys]]))
    if metrics.get("test"):
        cm = metrics["test"].get("confusion")
        lines.append(_md_row(["**test**", int(np.asarray(cm).sum()) if cm is not None else "",
                              *[_num(metrics["test"].get(k)) for k in keys]]))
    return "\n".join(lines)


def per_class_markdown(confusion: Any, classes: list[str]) -> str:
    """Per-class precision, recall, F1 and support (:func:`per_class_scores`) as a Markdown table."""
    s = per_class_scores(confusion)
    lines = [_md_row(["class", "precision", "recall", "F1", "support"]), _md_row(["---", "---:", "---:", "---:", "---:"])]
    for j, name in enumerate(classes):
        lines.append(_md_row([name, _num(s["precision"][j], 3), _num(s["recall"][j], 3), _num(s["f1"][j], 3), int(s["support"][j])]))
    return "\n".join(lines)


def confusion_figure(confusion: Any, classes: list[str], title: str = ""):
    """A matplotlib figure (Agg canvas, no pyplot, no global backend change) of a confusion matrix:
    cells coloured by the row-normalised rate (recall per true class), annotated with the counts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = np.asarray(confusion, dtype=np.float64)
    n = len(classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(c.sum(1, keepdims=True) > 0, c / c.sum(1, keepdims=True), 0.0)
    size = max(3.2, 0.55 * n + 1.8)
    fig = Figure(figsize=(size + 0.8, size), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(c[i, j])}", ha="center", va="center", fontsize=8 if n <= 10 else 6,
                    color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return fig


def save_confusion_png(path: str | Path, confusion: Any, classes: list[str], title: str = "") -> Path:
    """:func:`confusion_figure` written atomically as a PNG."""
    fig = confusion_figure(confusion, classes, title)
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")


def _repeats_markdown(metrics: Mapping[str, Any]) -> list[str]:
    """The ``--repeats`` section: mean ± std (sample std) over the repeats of each pooled metric and
    the bootstrap interval of the primary metric, from ``metrics["repeats"]`` and ``metrics["interval"]``."""
    rep = metrics.get("repeats")
    if not isinstance(rep, Mapping) or not rep.get("metrics"):
        return []
    keys = [k for k in TABLE_METRICS if k in rep["metrics"]]
    lines = ["", f"## Repeats ({rep.get('n', '?')} reseeded repetitions of the whole cross-validation)", "",
             "The tables above are the first repeat; here the pooled out-of-fold metrics of every repeat "
             "(mean ± sample std; each repeat's run is in `repeats/seed-S/`).", "",
             _md_row(["metric", "mean", "std", "values"]), _md_row(["---", "---:", "---:", "---"])]
    for k in keys:
        m = rep["metrics"][k]
        lines.append(_md_row([k, _num(m.get("mean")), _num(m.get("std")), ", ".join(_num(v) for v in m.get("values", []))]))
    ci = metrics.get("interval")
    if isinstance(ci, Mapping) and "low" in ci:
        lines += ["", f"{int(round(float(ci.get('level', 0.95)) * 100))} % bootstrap interval of {ci.get('metric')} "
                      f"(repeat mean, {ci.get('n_boot')} replicates over {ci.get('n_groups')} {ci.get('group')} groups): "
                      f"{_num(ci.get('estimate'))} [{_num(ci.get('low'))}, {_num(ci.get('high'))}]"]
    return lines


def relative_paths(command: list[Any], run_dir: str | Path | None) -> list[str]:
    """``command`` with every absolute path argument written relative to ``run_dir`` (so a report
    pasted elsewhere holds no local absolute paths); other arguments unchanged."""
    import os

    out = []
    for tok in map(str, command):
        key, eq, val = tok.partition("=") if (tok.startswith("--") and "=" in tok) else ("", "", tok)
        if run_dir is not None and os.path.isabs(val):
            val = os.path.relpath(val, os.path.abspath(run_dir))
        out.append(f"{key}{eq}{val}" if eq else val)
    return out


def report_markdown(config: Mapping[str, Any], metrics: Mapping[str, Any], images: Mapping[str, str] | None = None,
                    run_dir: str | Path | None = None) -> str:
    """The text of ``report.md`` from a run's ``config.json`` and ``metrics.json`` contents;
    ``images``: ``{"pooled": "confusion.png", "test": ...}`` file names to link. It starts with the
    protocol statement (:func:`emo.fuse.eval.protocols.protocol_statement`), lists every warning, the
    training time, and shows absolute paths of the command relative to ``run_dir``."""
    images = images or {}
    tr = config.get("training", {})
    proto = config.get("protocol", {})
    classes = config.get("classes")
    lines = [f"# Run report: {config.get('dataset', '?')} · {config.get('task', '?')} · {tr.get('head', '?')}", ""]
    statement = (metrics.get("protocol") or proto).get("statement")
    if statement:
        lines += [f"**{statement[0].upper() + statement[1:]}**", ""]
    facts = [("dataset", config.get("dataset")), ("task", config.get("task")),
             ("features", ", ".join(f"`{s}`" for s in config.get("feature_specs", []))),
             ("head", f"{tr.get('head')}" + (f" (structure {tr.get('structure')})" if tr.get("head") == "afg" else "")),
             ("decoder", tr.get("decoder")), ("protocol", f"--folds {proto.get('folds')} ({metrics.get('n_folds', '?')} folds, "
                                                         f"inner validation: {proto.get('inner_validation', '?')})"),
             ("samples", f"{proto.get('n_labelled', '?')} labelled of {proto.get('n_samples', '?')}"),
             ("emo", f"{config.get('emo_version', '?')}, {config.get('created', '')}"),
             ("training time", f"{metrics['seconds']:.1f} s" if isinstance(metrics.get("seconds"), (int, float)) else None)]
    lines += [f"- **{k}**: {v}" for k, v in facts if v not in (None, "")]
    if config.get("command"):
        import shlex

        lines += ["", "```", shlex.join(relative_paths(config["command"], run_dir)), "```"]
    warns = metrics.get("warnings") or config.get("warnings") or []
    if warns:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warns]
    lines += ["", "## Metrics", "", metrics_markdown(metrics), ""]
    lines.append("Per fold: the fold's evaluation part, outputs averaged over its seed models. Mean ± std: over folds "
                 "(population std). Pooled: all out-of-fold predictions together.")
    wheel = {k: v for k, v in (metrics.get("pooled") or {}).items() if k.startswith("wheel") and isinstance(v, (int, float))}
    if wheel:  # MER-FG (Track 2): the emotion-wheel metrics of the pooled predictions
        lines += ["", "Emotion-wheel metrics (pooled out-of-fold): " + ", ".join(f"{k} {_num(v)}" for k, v in sorted(wheel.items()))]
    lines += _repeats_markdown(metrics)
    pooled_cm = metrics.get("pooled", {}).get("confusion")
    if classes and pooled_cm is not None:
        parts = [("pooled out-of-fold predictions", pooled_cm, images.get("pooled"))]
        if metrics.get("test", {}).get("confusion") is not None:
            parts.append(("held-out test set (fold models averaged)", metrics["test"]["confusion"], images.get("test")))
        for what, cm, img in parts:
            n = int(np.asarray(cm).sum())
            lines += ["", f"## Per-class precision and recall: {what} (N = {n})", "", per_class_markdown(cm, classes), ""]
            lines += [f"## Confusion matrix: {what}", ""]
            if img:
                lines += [f"![confusion matrix, {what}]({img})", ""]
            lines += ["Rows: true class; columns: predicted class; counts.", "",
                      _md_row(["true \\ predicted", *classes]), _md_row(["---"] + ["---:"] * len(classes))]
            lines += [_md_row([classes[i], *[str(int(v)) for v in row]]) for i, row in enumerate(cm)]
    elif not classes:
        lines += ["", "Regression task: no per-class scores or confusion matrix."]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> Path:
    """Write ``report.md`` and, for discrete tasks, ``confusion.png`` (pooled out-of-fold) and
    ``confusion-test.png`` (held-out test set, when there is one) into ``run_dir``, each atomically.

    Args:
        run_dir: the run directory. config, metrics: the contents of its ``config.json`` and ``metrics.json``.

    Returns:
        The path of ``report.md``.
    """
    run_dir = Path(run_dir)
    classes = config.get("classes")
    images: dict[str, str] = {}
    if classes:
        for part, name, src in (("pooled", "confusion.png", metrics.get("pooled", {})),
                                ("test", "confusion-test.png", metrics.get("test") or {})):
            if src.get("confusion") is not None:
                title = f"{config.get('dataset', '')} · {config.get('training', {}).get('head', '')} · {part}"
                save_confusion_png(run_dir / name, src["confusion"], list(classes), title)
                images[part] = name
    return write_text(run_dir / "report.md", report_markdown(config, metrics, images, run_dir))



def repeats_table(summary: dict[str, Any]) -> str:
    """Plain-text lines for ``--repeats``: mean ± std over the repeats of each pooled metric, then the
    95 % group-bootstrap interval of the repeat-averaged primary metric (see :func:`emo.fuse.training.train.repeats_summary`)."""
    keys = [k for k in ("uar", "accuracy", "waf", "valence_mse", "valence_ccc", "vad_mse", "vad_ccc", "mer2023_score") if k in summary["metrics"]]
    lines = [f"over {summary['n']} repeats (pooled out-of-fold, mean ± std): " +
             ", ".join(f"{k} {summary['metrics'][k]['mean']:.4f} ± {summary['metrics'][k]['std']:.4f}" for k in keys)]
    ci = summary["interval"]
    lines.append(f"{int(ci['level'] * 100)}% bootstrap interval of {ci['metric']} (repeat mean, {ci['n_boot']} replicates over "
                 f"{ci['n_groups']} {ci['group']} groups): {ci['estimate']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]")
    return "\n".join(lines)


def training_speed(n: int, seconds: float) -> str:
    """The closing line of ``emo fuse train``/``sweep``: ``n`` models trained, wall seconds, models per second."""
    return f"trained {n} model{'s' if n != 1 else ''} in {seconds:.2f} s ({n / max(seconds, 1e-9):.2f} models/s)"


def ensemble_report_markdown(result: Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """``report.md`` of ``emo fuse ensemble`` from its ``ensemble.json``: protocol statement, member
    runs with their weights and validation (and test) metric, the fused row (nested: each evaluation
    group's own weights, so no single weight is shown), the bootstrap interval and the warnings.
    Run paths are shown relative to ``run_dir``."""
    import os

    m = result.get("metric", "?")
    rel = (lambda p: os.path.relpath(p, os.path.abspath(run_dir)) if run_dir is not None and os.path.isabs(str(p)) else str(p))  # noqa: E731
    st = (result.get("protocol") or {}).get("statement")
    lines = ["# Ensemble report", ""]
    if st:
        lines += [f"**{st[0].upper() + st[1:]}**", ""]
    lines += [f"- **method**: {result.get('method', '')}", f"- **selection metric**: {m}",
              f"- **validation**: {result.get('validation', {}).get('note', '')}"]
    if result.get("created"):
        lines.append(f"- **time**: {result['created']}")
    if result.get("command"):
        import shlex

        lines += ["", "```", shlex.join(relative_paths(shlex.split(str(result["command"])), run_dir)), "```"]
    test = "runs" in (result.get("test") or {})
    lines += ["", _md_row(["run", "weight", f"validation {m}", *([f"test {m}"] if test else [])]),
              _md_row(["---", "---:", "---:", *(["---:"] if test else [])])]
    for r in result.get("runs", []):
        lines.append(_md_row([f"`{rel(r)}`", _num(result["weights"].get(r), 3), _num(result["validation"]["runs"][r].get(m)),
                              *([_num(result["test"]["runs"][r].get(m))] if test else [])]))
    nested = result.get("validation", {}).get("nested")
    lines.append(_md_row(["**fused, nested**" if nested else "**fused (weights above)**",
                          "per held-out group" if nested else "", _num(result["validation"]["fused"].get(m)),
                          *([_num(result["test"]["fused"].get(m))] if test else [])]))
    ci = result.get("interval")
    if isinstance(ci, Mapping) and "low" in ci:
        lines += ["", f"{int(round(float(ci.get('level', 0.95)) * 100))} % bootstrap interval of the fused {ci.get('metric')} "
                      f"({ci.get('n_boot')} replicates over {ci.get('n_groups')} evaluation groups): "
                      f"{_num(ci.get('estimate'))} [{_num(ci.get('low'))}, {_num(ci.get('high'))}]"]
    if result.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def write_ensemble_report(out: str | Path, result: Mapping[str, Any]) -> Path:
    """Write :func:`ensemble_report_markdown` to ``out/report.md`` atomically."""
    return write_text(Path(out) / "report.md", ensemble_report_markdown(result, out))
