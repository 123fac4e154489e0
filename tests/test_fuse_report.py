"""report.md in every run directory: metrics table, per-class precision/recall, confusion-matrix PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emo.fuse.eval.report import per_class_scores, report_markdown, write_report


def test_per_class_scores_match_sklearn_and_mark_undefined():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where((rng.random(200) < 0.6) & (y < 3), y, rng.integers(0, 3, 200))  # class 3 is never predicted
    cm = confusion_matrix(y, p, labels=np.arange(4))
    s = per_class_scores(cm)
    pr, rc, f1, sup = precision_recall_fscore_support(y, p, labels=np.arange(4), zero_division=np.nan)
    assert np.isnan(s["precision"][3]) and np.isnan(pr[3])
    assert np.allclose(s["precision"][:3], pr[:3]) and np.allclose(s["recall"], rc) and np.array_equal(s["support"], sup)
    assert np.allclose(s["f1"][:3], f1[:3])
    with pytest.raises(ValueError, match="square"):
        per_class_scores([[1, 2, 3]])


def _toy(tmp_path, task="discrete", repeats=1):
    from test_fuse_run import make_dataset

    from emo.fuse.config import TrainConfig
    from emo.fuse.training.train import train

    feats = make_dataset(tmp_path, splits=True)
    out = tmp_path / "run"
    cfg = TrainConfig(head="mlp", epochs=6, patience=6, hidden=16, seeds=1, lr=1e-2, task=task)
    train(feats, "synth", ["egemaps", "hubert_large:2"], cfg, protocol="3", out=out, test_splits=["test"], command=["emo", "x"],
          repeats=repeats)
    return out


def test_every_run_gets_a_report_with_confusion_png(tmp_path):
    import matplotlib.image

    out = _toy(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    text = (out / "report.md").read_text()
    assert "## Metrics" in text and f"| **pooled** | {metrics['n']} | {metrics['pooled']['uar']:.4f} |" in text
    for f in metrics["folds"]:
        assert f"| {f['name']} | {f['n_test']} | {f['uar']:.4f} |" in text
    assert "## Per-class precision and recall: pooled out-of-fold predictions" in text
    assert "## Per-class precision and recall: held-out test set" in text
    recall = per_class_scores(metrics["pooled"]["confusion"])["recall"]
    assert f"| angry | {per_class_scores(metrics['pooled']['confusion'])['precision'][1]:.3f} | {recall[1]:.3f} |" in text
    assert "![confusion matrix, pooled out-of-fold predictions](confusion.png)" in text
    for png in ("confusion.png", "confusion-test.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(out / png).shape[0] > 300
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_report_of_a_repeated_run_has_the_repeats(tmp_path):
    out = _toy(tmp_path, repeats=2)
    metrics = json.loads((out / "metrics.json").read_text())
    text = (out / "report.md").read_text()
    u = metrics["repeats"]["metrics"]["uar"]
    assert "## Repeats (2 reseeded repetitions" in text and f"| uar | {u['mean']:.4f} | {u['std']:.4f} |" in text
    assert f"[{metrics['interval']['low']:.4f}, {metrics['interval']['high']:.4f}]" in text
    assert "## Repeats" not in (out / "repeats" / "seed-1000" / "report.md").read_text()


def test_regression_report_and_rewrite_through_a_symlink(tmp_path):
    out = _toy(tmp_path, task="valence")
    text = (out / "report.md").read_text()
    assert "valence_ccc" in text and "Regression task" in text and not (out / "confusion.png").exists()
    # a symlink planted at the report's path is refused (emo.fsio), never written through
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "report.md").unlink()
    (out / "report.md").symlink_to(victim)
    from emo.cli import app

    r = CliRunner().invoke(app, ["fuse", "report", str(out)])
    assert r.exit_code == 1 and "report.md" in r.output and "symbolic link" in r.output, r.output
    assert victim.read_text() == "keep me"
    (out / "report.md").unlink()
    r = CliRunner().invoke(app, ["fuse", "report", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "report.md").read_text() == text
    r = CliRunner().invoke(app, ["fuse", "report", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "not a readable emo run directory" in r.output


def test_report_markdown_without_test_set_or_classes_is_plain():
    cfg = {"dataset": "d", "task": "discrete", "classes": ["a", "b"], "training": {"head": "linear"}, "protocol": {"folds": "2"}}
    m = {"folds": [{"name": "fold0", "n_test": 2, "uar": 0.5}, {"name": "fold1", "n_test": 2, "uar": float("nan")}],
         "mean": {"uar": 0.5}, "std": {"uar": 0.0}, "pooled": {"uar": 0.5, "confusion": [[1, 1], [0, 2]]}, "n": 4, "n_folds": 2}
    text = report_markdown(cfg, m)
    assert "| fold1 | 2 | – |" in text  # NaN is never printed as a number
    assert "held-out test" not in text and "| b | 0.667 | 1.000 | 0.800 | 2 |" in text
    assert write_report  # imported API
