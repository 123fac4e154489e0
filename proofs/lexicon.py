"""Proof for emo.lexicon on the real NRC-VAD and EmoLex lexicons.

    .venv/bin/python proofs/lexicon.py --shared /work/shared/data

Writes results/lexicon.json (and results/lexicon_clusters.png):

* ``vocabulary``: how the default vocabulary is chosen and its size (plus the
  EmoLex-based alternative);
* ``basic_words_own_cluster``: per label set, for each basic emotion, whether its
  own VAD point lies in the k-means cluster named after it after fitting
  (Jia et al. 2024), and ``all_ok``;
* ``mean_words_at_radius_0.25``: average number of other vocabulary words within
  L2 0.25 of each vocabulary word (the paper: about five with 195 words);
* ``round_trip_accuracy``: per label set, discrete -> VAD -> discrete accuracy;
* ``open_vocab_round_trip``: per label set, the fraction of open-vocabulary words
  (within 0.25 of a label's VAD) that the classifier maps back to that label;
* ``univa_correlation``: UniVA eq. 8 matrix M for each label set.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proofs"))
from _common import command_line, parse, parser, write_result  # noqa: E402
RADII = (0.1, 0.15, 0.2, 0.25, 0.3)


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "lexicon.json")
    args = parse(ap, argv)

    from emo.lexicon.classifier import VADClassifier
    from emo.lexicon.correlation import correlation_matrix
    from emo.lexicon.labels import LABEL_SETS, canonical_label, labels_vad
    from emo.lexicon.nrc import load_emolex, load_nrc_vad
    from emo.lexicon.vocabulary import affect_vocabulary, emotion_vocabulary

    lex_dir = args.shared / "lexicon"
    if not (lex_dir / "NRC-VAD-Lexicon.txt").is_file():
        sys.exit(f"error: {lex_dir / 'NRC-VAD-Lexicon.txt'} not found (pass --shared or set EMO_SHARED_DATA)")
    t0 = time.perf_counter()
    lex = load_nrc_vad(lex_dir)
    emolex = load_emolex(lex_dir)
    vocabs = {"affect": affect_vocabulary(lex), "emolex": emotion_vocabulary(lex, lex_dir)}

    res: dict = {
        "command": command_line(),
        "lexicon": {"nrc_vad_words": len(lex), "emolex_words": len(emolex), "score_mapping": "2x - 1, [0, 1] -> [-1, 1]"},
        "vocabulary": {
            "default": "affect",
            "how_chosen": vocabs["affect"].description
            + "; hand-written list of words naming felt states (positive, low-arousal, sadness, anger/disgust, "
            "fear/anxiety families), written before measuring, mirroring the 195 emotion words of Jia et al. 2024",
            "size": len(vocabs["affect"]),
            "alternative_emolex": {"how_chosen": vocabs["emolex"].description, "size": len(vocabs["emolex"])},
        },
    }

    # --- open vocabulary density ---------------------------------------------------
    density = {}
    for name, v in vocabs.items():
        c = {f"{r}": float(v.count_within(r).mean()) for r in RADII}
        n25 = v.count_within(0.25)
        density[name] = {"mean_by_radius": c, "median_at_0.25": float(np.median(n25)), "fraction_with_none_at_0.25": float((n25 == 0).mean())}
    for k in (2, 3, 4, 5):
        v = emotion_vocabulary(lex, lex_dir, min_emotions=k)
        density[f"emolex_min_emotions_{k}"] = {"size": len(v), "mean_at_0.25": float(v.count_within(0.25).mean())}
    res["mean_words_at_radius_0.25"] = density["affect"]["mean_by_radius"]["0.25"]
    res["mean_words_at_radius_0.25_emolex"] = density["emolex"]["mean_by_radius"]["0.25"]
    res["open_vocabulary_density"] = density

    # --- classifier: own clusters and round trips --------------------------------------
    own: dict = {}
    own_emolex: dict = {}
    round_trip: dict = {}
    round_trip_detail: dict = {}
    ov_round_trip: dict = {}
    sizes: dict = {}
    for set_name, labels in LABEL_SETS.items():
        clf = VADClassifier(set_name, vocabulary=vocabs["affect"], lexicon=lex)
        oc = clf.own_cluster()
        own[set_name] = {"labels": oc, "all_ok": all(oc.values())}
        sizes[set_name] = clf.cluster_sizes()
        clf_em = VADClassifier(set_name, vocabulary=vocabs["emolex"], lexicon=lex)
        oce = clf_em.own_cluster()
        own_emolex[set_name] = {"labels": oce, "all_ok": all(oce.values()), "n_ok": sum(oce.values())}
        # discrete -> VAD -> discrete (label names as the dataset spells them, via synonyms)
        pred = clf.predict(labels_vad(list(labels), lex))
        round_trip[set_name] = float(np.mean([p == lbl for p, lbl in zip(pred, labels)]))
        round_trip_detail[set_name] = dict(zip(labels, pred))
        # discrete -> VAD -> open-vocabulary words -> discrete
        per = {}
        for lbl, point in zip(labels, labels_vad(list(labels), lex)):
            words = vocabs["affect"].nearest(point, 0.25)
            if words:
                back = clf.predict(lex.lookup_many([w for w, _ in words])[0])
                per[lbl] = {"n_words": len(words), "fraction_back": float(np.mean([b == lbl for b in back])),
                            "words": [w for w, _ in words[:8]]}
            else:
                per[lbl] = {"n_words": 0, "fraction_back": None, "words": []}
        fr = [p["fraction_back"] for p in per.values() if p["fraction_back"] is not None]
        ov_round_trip[set_name] = {"mean_fraction_back": float(np.mean(fr)) if fr else None, "per_label": per}
    res["basic_words_own_cluster"] = own
    res["basic_words_own_cluster_all_sets_ok"] = all(v["all_ok"] for v in own.values())
    res["basic_words_own_cluster_emolex_vocabulary"] = own_emolex
    res["round_trip_accuracy"] = round_trip
    res["round_trip_predictions"] = round_trip_detail
    res["open_vocab_round_trip"] = ov_round_trip
    res["cluster_sizes"] = sizes
    res["label_vad"] = {
        c: [round(float(x), 4) for x in labels_vad([c], lex)[0]]
        for c in sorted({canonical_label(x) for ls in LABEL_SETS.values() for x in ls})
    }
    res["univa_correlation"] = {
        s: {"labels": list(ls), "M": np.round(correlation_matrix(s, lex), 4).tolist()} for s, ls in LABEL_SETS.items()
    }
    res["seconds"] = round(time.perf_counter() - t0, 2)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, res, quiet=True)
    _plot(vocabs["affect"], VADClassifier("mer", vocabulary=vocabs["affect"], lexicon=lex), lex, args.out.with_name("lexicon_clusters.png"))
    print(json.dumps({k: res[k] for k in ("mean_words_at_radius_0.25", "mean_words_at_radius_0.25_emolex",
                                          "basic_words_own_cluster_all_sets_ok", "round_trip_accuracy")}, indent=2))
    print(f"wrote {args.out}")
    return res


def _plot(vocab, clf, lex, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emo.lexicon.labels import labels_vad

    k = clf.assign(vocab.vad)
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(clf.labels):
        m = k == i
        ax.scatter(vocab.vad[m, 0], vocab.vad[m, 1], s=12, color=cmap(i), alpha=0.6, label=f"{name} ({m.sum()})")
    basic = labels_vad(clf.labels, lex)
    ax.scatter(basic[:, 0], basic[:, 1], marker="*", s=250, c=[cmap(i) for i in range(len(clf.labels))], edgecolors="k")
    ax.scatter(clf.centres[:, 0], clf.centres[:, 1], marker="X", s=120, c=[cmap(i) for i in range(len(clf.labels))], edgecolors="k")
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("MER k-means over the affect vocabulary (* basic emotion, X fitted centre)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
