"""`emo fuse train` with the issue-14 options: --task multilabel, --univa, --pseudo-labels (end to end)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from emo.extract.datasets.base import Sample, write_manifest
from emo.extract.store import StoreWriter
from emo.extract.types import Encoded
from helpers import write_lexicon

WORDS = ["happy", "sad", "angry", "surprised"]
FAST = ["--epochs", "12", "--patience", "12", "--hidden", "16", "--seeds", "1", "--lr", "0.01", "--threads", "1"]


def _dataset(root, n=120, n_unl=0, multilabel=False, seed=0):
    rng = np.random.default_rng(seed)
    feats = root / "features"
    centers = rng.normal(size=(4, 8)) * 3
    y = np.arange(n + n_unl) % 4
    samples = []
    for i in range(n + n_unl):
        lab = i < n
        words = [WORDS[y[i]]] + ([WORDS[(y[i] + 1) % 4]] if multilabel and i % 3 == 0 else [])
        samples.append(Sample(f"u{i:03d}", None, transcript=f"so {WORDS[y[i]]} today", discrete=WORDS[y[i]] if lab and not multilabel else None,
                              emotions=words if lab and multilabel else None, split=("test" if i % 5 == 0 else "train") if lab else "unlabeled"))
    classes = None if multilabel else sorted(WORDS)
    write_manifest(feats / "toy", SimpleNamespace(name="toy", root=root, classes=classes), samples)
    for enc, mod, d in (("egemaps", "audio", 8), ("minilm", "text", 6)):
        with StoreWriter(feats / "toy" / f"{enc}.h5", {"encoder": enc, "source": "s", "weights_hash": "h", "modality": mod},
                         ["0"], dtype="float32") as w:
            for i, s in enumerate(samples):
                v = centers[y[i]][:d] + rng.normal(size=d)
                if multilabel and i % 3 == 0:
                    v = v + centers[(y[i] + 1) % 4][:d]
                w.add(s.name, Encoded({"0": v.astype(np.float32)}))
            w.finalize()
    return feats, samples


def _train(feats, out, *extra):
    from emo.cli import app

    r = CliRunner().invoke(app, ["fuse", "train", "--dataset", "toy", "--features-dir", str(feats), "--features", "egemaps",
                                 "--features", "minilm", "--folds", "split", "--test-split", "test", "--head", "mlp",
                                 *FAST, *extra, "--out", str(out)])
    assert r.exit_code == 0, r.output
    return r, json.loads((out / "config.json").read_text()), json.loads((out / "metrics.json").read_text())


def test_multilabel_task_end_to_end(tmp_path):
    feats, samples = _dataset(tmp_path, multilabel=True)
    r, cfg, m = _train(feats, tmp_path / "run", "--task", "multilabel", "--threshold", "0.25")
    assert cfg["classes"] == sorted(WORDS) and cfg["task"] == "multilabel"
    for k in ("ml_accuracy", "hamming_loss", "micro_f1", "macro_f1"):
        assert k in m["pooled"] and k in r.output
    assert m["pooled"]["micro_f1"] > 0.6 and m["pooled"]["hamming_loss"] < 0.25
    rows = list(csv.DictReader(open(tmp_path / "run" / "predictions.csv")))
    first = next(x for x in rows if x["name"] == "u000")
    assert first["true"] == "happy;sad"
    assert all(p in WORDS for x in rows for p in x["pred"].split(";"))


def test_univa_and_pseudo_labels_end_to_end(tmp_path):
    feats, samples = _dataset(tmp_path, n=100, n_unl=60)
    lex = write_lexicon(tmp_path / "lex.txt", {"happy": (0.9, 0.7, 0.6), "sad": (0.1, 0.2, 0.2), "angry": (0.1, 0.9, 0.6),
                                                "surprised": (0.8, 0.9, 0.5), "today": (0.6, 0.4, 0.5), "so": (0.5, 0.5, 0.5)})
    _, cfg, m = _train(feats, tmp_path / "univa", "--head", "univa", "--univa", "--univa-eta", "0", "--va-source", "transcript",
                       "--lexicon", str(lex))
    assert cfg["univa"]["va"]["source"] == "transcript" and cfg["univa"]["unlabelled_rows"] == 60
    assert cfg["univa"]["eta_weight"] == 0.0 and cfg["training"]["univa_lambda"] == 0.3
    # the protocol record keeps its own reason (train() once overwrote it with the eq. 8 correlation note)
    assert cfg["protocol"]["reason"] == "asked for with --folds split" and cfg["univa"]["correlation_note"].startswith("cosine")
    from emo.fuse.training.data import load_features
    from emo.fuse.run import load_run

    fs = load_features(feats, "toy", ["egemaps", "minilm"])
    run = load_run(tmp_path / "univa")  # the univa head is rebuilt from config.json
    probs = run.predict({k: fs.blocks[k][:5] for k in ("egemaps", "minilm")})["probs"]
    assert probs.shape == (5, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert len(cfg["univa"]["correlation"]) == 4 and m["pooled"]["waf"] > 0.6
    _, cfg0, m0 = _train(feats, tmp_path / "r0")
    from emo.cli import app

    r = CliRunner().invoke(app, ["fuse", "pseudo-label", "--run", str(tmp_path / "r0"), "--dataset", "toy", "--features-dir", str(feats),
                                 "--subset", "unlabeled", "--threshold", "0.5", "--out", str(tmp_path / "pseudo.csv")])
    assert r.exit_code == 0, r.output
    n_kept = json.loads((tmp_path / "pseudo.csv.json").read_text())["n_kept"]
    assert n_kept > 30
    _, cfg1, m1 = _train(feats, tmp_path / "r1", "--pseudo-labels", str(tmp_path / "pseudo.csv"), "--pseudo-weight", "0.5")
    assert cfg1["pseudo_labels"]["n_added"] == n_kept and cfg1["pseudo_labels"]["weight"] == 0.5
    folds = json.loads((tmp_path / "r1" / "folds.json").read_text())
    pseudo_names = {row["name"] for row in csv.DictReader(open(tmp_path / "pseudo.csv"))}
    for f in folds["folds"]:
        assert pseudo_names <= set(f["train"]) and not pseudo_names & (set(f["val"]) | set(f["test"]))
    # reproducing the run from its config.json takes the pseudo-labels over
    from emo.fuse.options import read_config_file

    again = read_config_file(tmp_path / "r1" / "config.json")
    assert again["pseudo_labels"] == str(tmp_path / "pseudo.csv") and again["pseudo_weight"] == 0.5
    # a 5-fold CV run: the labelling run trained on clips of its evaluation folds -> refused
    from emo.cli import app as app2

    r = CliRunner().invoke(app2, ["fuse", "train", "--dataset", "toy", "--features-dir", str(feats), "--features", "egemaps",
                                  "--folds", "5", *FAST, "--pseudo-labels", str(tmp_path / "pseudo.csv"), "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "evaluation clips" in r.output


@pytest.mark.parametrize("bad", [["--univa-lambda", "1.5", "--univa"], ["--va-source", "nowhere", "--univa"]])
def test_bad_univa_options_are_refused(tmp_path, bad):
    feats, _ = _dataset(tmp_path, n=40)
    from emo.cli import app

    r = CliRunner().invoke(app, ["fuse", "train", "--dataset", "toy", "--features-dir", str(feats), "--features", "egemaps",
                                 "--folds", "split", "--test-split", "test", *FAST, *bad, "--out", str(tmp_path / "x")])
    assert r.exit_code != 0
