"""Proof (issue 23): the seven wrong-answers-at-the-seams findings, re-created on the project's own
data, and what emo does about each now (refused, flagged or consistent).

Data: EmoDB as a folder corpus with its speaker column (535 clips, 10 speakers, eGeMAPS), MER 2026
shaped fixtures built from the 49 real av clips (``tests/mer_fixtures.py``: 13 labelled clips,
candidates, a pre-extracted 16 kHz ``audio/NAME.wav`` per clip as MER ships), MELD text
(NRC-VAD features) and the EmoBox EmoDB fold lists.

Findings (the issue's numbering):

1. default protocol: ``emo fuse train`` without ``--folds`` on a corpus with speakers;
2. scoring vs training: (a) MER audio from ``audio/*.wav`` in training, the mp4's track when scoring
   files; (b) ``--normalize speaker`` runs scoring a held-out speaker; (c) face detector;
3. NRC-VAD over the ``chinese`` column (a Chinese stand-in transcript per clip, written by this
   script: the shared data hold no Chinese text);
4. sweeps over fer_xception's layers of different sizes; the rare-class refusal in sweeps;
5. the MER commands (``emo score --subset``, the submission file);
6. what a reader sees (class names in warnings, report.md, ensemble report, repeats);
7. UniVA with η on MELD (one predicted class).

It runs the ``emo`` CLI of whatever checkout it lies in, so the same script measures the fork
commit (``--label before``, run from a ``git worktree`` at 20e060e) and this branch
(``--label after``); ``--merge BEFORE.json`` puts a before run beside the after run in
``results/seams.json``.

    python proofs/seams.py --shared /work/shared/data --label after --merge /tmp/seams_before.json
    python proofs/seams.py --combine AFTER.json BEFORE.json     # only combine two finished runs
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse, parser, write_result  # noqa: E402
EMO = [sys.executable, "-m", "emo.cli"]
CHINESE = "我今天很高兴也有一点担心"  # stand-in transcript for the chinese column (no Chinese text in the shared data)


def emo(*args, cwd=None) -> dict:
    """Run the emo CLI; never raises: exit code, stdout and stderr tails."""
    t0 = time.perf_counter()
    r = subprocess.run(EMO + [str(a) for a in args], capture_output=True, text=True, cwd=cwd or ROOT)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr, "seconds": round(time.perf_counter() - t0, 1)}


def tail(r: dict, n: int = 400) -> str:
    return (r["err"] + r["out"]).strip()[-n:]


def read_csv(p: Path) -> list[dict]:
    with open(p, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def uar(true: list[str], pred: list[str]) -> float:
    from sklearn.metrics import recall_score

    return round(float(recall_score(true, pred, average="macro", labels=sorted(set(true)), zero_division=0)), 4)


def jload(p: Path) -> dict:
    try:
        return json.loads(Path(p).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# ----------------------------------------------------------------------------------------------
# data


def emodb_corpus(shared: Path, work: Path) -> tuple[Path, Path, dict]:
    """EmoDB as a folder corpus (wav links + labels.csv name,emotion,speaker) and its eGeMAPS store."""
    root = work / "emodb_corpus"
    meta = {}
    if not (root / "labels.csv").is_file():
        root.mkdir(parents=True, exist_ok=True)
        rows = read_csv(shared / "emodb" / "labels.csv")
        with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["name", "emotion", "speaker"])
            for r in rows:
                stem = Path(r["file"]).stem
                link = root / f"{stem}.wav"
                if not link.exists():
                    link.symlink_to(shared / "emodb" / r["file"])
                w.writerow([stem, r["emotion"], r["speaker"]])
    feats = work / "feat"
    if not (feats / "emodbf" / "egemaps.h5").is_file():
        r = emo("extract", "-d", "folder", "-r", root, "-e", "egemaps", "-o", feats, "--name", "emodbf", "--device", "cpu", "--no-progress")
        meta["extract"] = {"rc": r["rc"], "seconds": r["seconds"], "tail": tail(r)}
    spk = {r["name"]: r["speaker"] for r in read_csv(root / "labels.csv")}
    return root, feats, {"speakers": spk, **meta}


def manifest_copy(feats: Path, src: str, dst: str, edit) -> None:
    """A second dataset folder with the same eGeMAPS store and an edited samples.csv manifest."""
    d = feats / dst
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for f in (feats / src).iterdir():
        if f.name.endswith(".h5") or f.name == "dataset.json":
            shutil.copyfile(f, d / f.name)
    rows = read_csv(feats / src / "samples.csv")
    rows = [edit(dict(r)) for r in rows]
    with open(d / "samples.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dj = jload(d / "dataset.json")
    if dj:
        dj["dataset"] = dst
        (d / "dataset.json").write_text(json.dumps(dj), encoding="utf-8")


def mer_pool(shared: Path, work: Path) -> tuple[Path, dict]:
    """MER 2026 fixture: tests/mer_fixtures.build_mer_pool, then an unscaled 16 kHz wav per clip
    (as MER's audio/) and the Chinese stand-in in the chinese column for clips with a transcript."""
    root = work / "mer2026"
    sys.path.insert(0, str(ROOT / "tests"))
    from mer_fixtures import build_mer_pool, write_wav

    from emo.extract.media import load_audio

    if not (root / "track1_train.csv").is_file():
        if root.exists():
            shutil.rmtree(root)
        info = build_mer_pool(shared / "av", root, 2026, wavs=0)
        for v in sorted((root / "video").iterdir()):
            try:
                write_wav(root / "audio" / f"{v.stem}.wav", load_audio(v, 16000))
            except Exception as e:  # a clip without audio: no wav
                print(f"no wav for {v.name}: {e}", file=sys.stderr)
        rows = read_csv(root / "subtitle_chieng.csv")
        with open(root / "subtitle_chieng.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["name", "chinese", "english"])
            for r in rows:
                w.writerow([r["name"], CHINESE if r["english"].strip() else "", r["english"]])
        (root / "info.json").write_text(json.dumps(info), encoding="utf-8")
    return root, jload(root / "info.json")


# ----------------------------------------------------------------------------------------------
# findings


def train(feats: Path, dataset: str, out: Path, *extra) -> dict:
    r = emo("fuse", "train", "--dataset", dataset, "--features-dir", feats, "--out", out, *extra)
    m, c = jload(out / "metrics.json"), jload(out / "config.json")
    text = r["out"]
    return {"rc": r["rc"], "pooled_uar": round(m["pooled"]["uar"], 4) if m.get("pooled", {}).get("uar") is not None else None,
            "metrics_protocol": m.get("protocol"), "metrics_warnings": m.get("warnings"),
            "config_folds": (c.get("protocol") or {}).get("folds"), "first_table_line": text.splitlines()[0] if text else "",
            "seconds": r["seconds"], "error": None if r["rc"] == 0 else tail(r)}


def finding1(shared: Path, work: Path, feats: Path) -> dict:
    runs = work / "runs"
    out = {"data": "EmoDB folder corpus, labels.csv with a speaker column, eGeMAPS, --seeds 1, other settings default"}
    out["default"] = train(feats, "emodbf", runs / "f1_default", "--features", "egemaps", "--seeds", "1")
    out["speaker"] = train(feats, "emodbf", runs / "f1_speaker", "--features", "egemaps", "--seeds", "1", "--folds", "speaker")
    out["five_fold_asked"] = train(feats, "emodbf", runs / "f1_5", "--features", "egemaps", "--seeds", "1", "--folds", "5")
    out["emobox_folds"] = train(feats, "emodbf", runs / "f1_emobox", "--features", "egemaps", "--seeds", "1",
                                "--folds", f"file:{shared / 'emobox' / 'emodb'}")
    d = out["default"]
    proto = d.get("metrics_protocol") or {}
    out["now"] = ("consistent: the default is speaker-independent and metrics.json says so"
                  if proto.get("speaker_independent") is True else
                  "NOT FIXED: the default mixes speakers or metrics.json does not say" if d["rc"] == 0 else "error")
    return out


def finding2a(work: Path, mer: Path) -> dict:
    """MER audio source: training on audio/*.wav; scoring the mp4 files directly."""
    feats, runs = work / "mer_feat", work / "runs"
    r = emo("extract", "-d", "mer2026", "-r", mer, "--track", "1", "-e", "egemaps", "-o", feats, "--name", "m26", "--device", "cpu",
            "--no-progress")
    out: dict = {"extract_wav_rc": r["rc"]}
    r2 = emo("extract", "-d", "folder", "-r", mer / "video", "-e", "egemaps", "-o", feats, "--name", "m26video", "--device", "cpu",
             "--no-progress")
    out["extract_mp4_rc"] = r2["rc"]
    try:
        from emo.extract.store import FeatureStore

        a, b = FeatureStore(feats / "m26" / "egemaps.h5"), FeatureStore(feats / "m26video" / "egemaps.h5")
        names = sorted(set(a.names) & set(b.names))
        xa, xb = a.read(a.layers[:1], names)[:, 0], b.read(b.layers[:1], names)[:, 0]
        rel = np.abs(xa - xb) / np.maximum(np.abs(xa), 1e-6)
        out["egemaps_wav_vs_mp4"] = {"clips": len(names), "max_relative_difference": round(float(rel.max()), 4),
                                     "median_relative_difference": round(float(np.median(rel)), 4)}
    except Exception as e:
        out["egemaps_wav_vs_mp4"] = {"error": str(e)[:300]}
    run = runs / "f2a"
    out["train"] = train(feats, "m26", run, "--features", "egemaps", "--head", "linear", "--seeds", "1", "--folds", "3",
                         "--allow-rare-classes")
    ds = emo("score", "--run", run, "--dataset", "mer2026", "--root", mer, "--track", "1", "--features-dir", feats, "--name", "m26",
             "--out", work / "f2a_dataset.csv", "--device", "cpu", "--no-progress", *(["--subset", "all"] if has_option("score", "--subset") else []))
    files = emo("score", *sorted((mer / "video").iterdir()), "--run", run, "--out", work / "f2a_files.csv", "--device", "cpu", "--no-progress")
    out["score_dataset_rc"], out["score_files_rc"] = ds["rc"], files["rc"]
    out["score_files_message"] = tail(files, 500)
    if ds["rc"] == 0 and files["rc"] in (0, 3):
        p1 = {r["name"]: r.get("pred") for r in read_csv(work / "f2a_dataset.csv") if r["status"] == "ok"}
        p2 = {r["name"]: r.get("pred") for r in read_csv(work / "f2a_files.csv") if r["status"] == "ok"}
        common = sorted(set(p1) & set(p2))
        out["labels_differ"] = {"clips": len(common), "different": sum(p1[n] != p2[n] for n in common),
                                "examples": [[n, p1[n], p2[n]] for n in common if p1[n] != p2[n]][:3]}
    if has_option("score", "--audio-dir"):
        fixed = emo("score", *sorted((mer / "video").iterdir()), "--run", run, "--out", work / "f2a_audiodir.csv", "--device", "cpu",
                    "--no-progress", "--audio-dir", mer / "audio")
        out["score_files_with_audio_dir_rc"] = fixed["rc"]
        if fixed["rc"] in (0, 3) and ds["rc"] == 0:
            p1 = {r["name"]: r.get("pred") for r in read_csv(work / "f2a_dataset.csv") if r["status"] == "ok"}
            p3 = {r["name"]: r.get("pred") for r in read_csv(work / "f2a_audiodir.csv") if r["status"] == "ok"}
            common = sorted(set(p1) & set(p3))
            out["audio_dir_vs_dataset_different"] = sum(p1[n] != p3[n] for n in common)
    out["now"] = ("refused: scoring the mp4s names the audio source" if files["rc"] == 1 and "audio" in out["score_files_message"]
                  else "NOT REFUSED")
    return out


def finding2b(work: Path, feats: Path, corpus: Path, speakers: dict) -> dict:
    """--normalize speaker: speaker 16 held out (split test), then its files scored."""
    held = "16"
    manifest_copy(feats, "emodbf", "emodbs", lambda r: {**r, "split": "test" if speakers.get(r["name"]) == held else "train"})
    run = work / "runs" / "f2b"
    out: dict = {"held_out_speaker": held}
    out["train"] = train(feats, "emodbs", run, "--features", "egemaps", "--seeds", "1", "--folds", "speaker", "--test-split", "test",
                         "--normalize", "speaker")
    m = jload(run / "metrics.json")
    out["run_test_uar"] = round(m["test"]["uar"], 4) if m.get("test") else None
    out["run_pooled_uar"] = out["train"]["pooled_uar"]
    files = sorted(p for p in corpus.glob("*.wav") if speakers.get(p.stem) == held)
    truth = {r["name"]: r["emotion"] for r in read_csv(corpus / "labels.csv")}
    spk_csv = work / "speakers16.csv"
    with open(spk_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "speaker"])
        w.writerows([[p.stem, held] for p in files])

    def score(tag, *extra):
        r = emo("score", *files, "--run", run, "--features-dir", feats / "emodbs", "--out", work / f"f2b_{tag}.csv", "--device", "cpu",
                "--no-progress", *extra)
        res = {"rc": r["rc"], "message": tail(r, 400) if r["rc"] not in (0, 3) else None}
        if r["rc"] in (0, 3):
            rows = [x for x in read_csv(work / f"f2b_{tag}.csv") if x["status"] == "ok"]
            preds = [x["pred"] for x in rows]
            res.update({"n": len(rows), "uar": uar([truth[x["name"]] for x in rows], preds),
                        "most_common": max(set(preds), key=preds.count), "most_common_n": max(preds.count(p) for p in set(preds)),
                        "normalization_column": sorted({x.get("normalization", "(no column)") for x in rows})})
        return res

    out["score_without_speakers"] = score("plain")
    if has_option("score", "--speakers"):
        out["score_with_speakers"] = score("own", "--speakers", spk_csv)
        out["score_fallback_global"] = score("fallback", "--speaker-fallback", "global")
    plain = out["score_without_speakers"]
    out["now"] = ("refused without speakers; with --speakers the files use their own statistics"
                  if plain["rc"] == 1 and out.get("score_with_speakers", {}).get("rc") == 0 else "NOT FIXED")
    return out


def finding2c_and_4(work: Path, mer: Path) -> dict:
    """Face detector recorded and enforced; sweeps over fer_xception's layers of different sizes."""
    feats, runs = work / "mer_feat", work / "runs"
    r = emo("extract", "-d", "mer2026", "-r", mer, "--track", "1", "-e", "fer_xception", "-o", feats, "--name", "m26", "--device", "cpu",
            "--no-progress")
    out: dict = {"extract_rc": r["rc"], "extract_seconds": r["seconds"], "extract_tail": tail(r, 200) if r["rc"] not in (0, 3) else None}
    run = runs / "f2c"
    out["train"] = train(feats, "m26", run, "--features", "fer_xception:logits", "--head", "linear", "--seeds", "1", "--folds", "3",
                         "--allow-rare-classes")
    cfg = jload(run / "config.json")
    out["run_records_detector"] = [(i.get("provenance") or {}).get("face_detector") for i in cfg.get("inputs", [])]
    out["contract"] = cfg.get("input_contract")
    haar = emo("score", "--run", run, "--dataset", "mer2026", "--root", mer, "--track", "1", "--out", work / "f2c_haar.csv",
               "--device", "cpu", "--no-progress", "--face-detector", "haar")
    out["score_with_haar"] = {"rc": haar["rc"], "message": tail(haar, 400)}
    out["finding2c_now"] = ("refused: the detector differs from the run's" if haar["rc"] == 1 and "detector" in haar["err"]
                            else "NOT REFUSED")
    sw = emo("fuse", "sweep", "--dataset", "m26", "--features", "fer_xception", "--features-dir", feats, "--folds", "3",
             "--out", runs / "f4_sweep", "--no-progress", *(["--allow-rare-classes"] if has_option("fuse sweep", "--allow-rare-classes") else []))
    sj = jload(runs / "f4_sweep" / "sweep.json")
    out["sweep_fer_xception"] = {"rc": sw["rc"], "message": tail(sw, 300) if sw["rc"] != 0 else None,
                                 "windows": [row["window"] for row in sj.get("rows", [])] if sw["rc"] == 0 else None}
    rare = emo("fuse", "sweep", "--dataset", "m26", "--features", "fer_xception:logits", "--features-dir", feats, "--folds", "3",
               "--out", runs / "f4_rare", "--no-progress")
    out["sweep_rare_classes"] = {"rc": rare["rc"], "message": tail(rare, 300)}
    out["finding4_now"] = ("consistent: every layer swept one size at a time; rare classes refused as in train"
                           if sw["rc"] == 0 and rare["rc"] == 1 and "fewer than 2" in rare["err"] else "NOT FIXED")
    return out


def finding3(work: Path, mer: Path, lexicon: Path) -> dict:
    out: dict = {"note": f"chinese column: the stand-in {CHINESE!r} for every clip with an English transcript"}
    for tag, extra in (("chinese_default", []), ("english", ["--text-column", "english"])):
        feats = work / f"f3_{tag}"
        r = emo("extract", "-d", "mer2026", "-r", mer, "--track", "1", "-e", "nrc_vad", "--lexicon", lexicon, "-o", feats,
                "--name", "m26t", "--device", "cpu", "--no-progress", *extra)
        res = {"rc": r["rc"], "message": tail(r, 400) if r["rc"] != 0 else None}
        p = feats / "m26t" / "nrc_vad.h5"
        if r["rc"] == 0 and p.is_file():
            from emo.extract.store import FeatureStore

            st = FeatureStore(p)
            x = st.read(["vad"], st.names)[:, 0]
            samples = read_csv(feats / "m26t" / "samples.csv")
            with_text = sum(bool((s.get("transcript") or "").strip()) for s in samples)
            res.update({"clips": len(st.names), "zero_vectors": int((~x.any(1)).sum()),
                        "flagged_no_text": sum("no_text" in st.flags(n) for n in st.names), "with_transcript": with_text})
        out[tag] = res
    mk = subprocess.run(["make", "-n", "features", "DATASET=mer2026", "MODELS=nrc_vad", "TEXT_COLUMN=english", "NAME=mer2026-t2",
                         f"VENV={Path(sys.executable).parent.parent}"], capture_output=True, text=True, cwd=ROOT)
    line = mk.stdout.strip().splitlines()[-1] if mk.stdout.strip() else ""
    out["make_features_passes_text_column_and_name"] = "--text-column english" in line and "--name mer2026-t2" in line
    out["now"] = ("refused: zero coverage names the column and suggests --text-column english; no_text only for empty transcripts"
                  if out["chinese_default"]["rc"] != 0 and "english" in (out["chinese_default"]["message"] or "") else "NOT REFUSED")
    return out


def finding5(work: Path, mer: Path) -> dict:
    run, feats = work / "runs" / "f2a", work / "mer_feat"
    out: dict = {}
    d = emo("score", "--run", run, "--dataset", "mer2026", "--root", mer, "--track", "1", "--features-dir", feats, "--name", "m26",
            "--out", work / "f5_default.csv", "--device", "cpu", "--no-progress")
    if d["rc"] in (0, 3):
        rows = read_csv(work / "f5_default.csv")
        info = jload(mer / "info.json")
        labelled = {n for n, _ in info.get("labelled", [])}
        out["default_scoring"] = {"rows": len(rows), "training_clips_scored": sum(r["name"] in labelled for r in rows),
                                  "has_split_column": "split" in rows[0]}
    else:
        out["default_scoring"] = {"rc": d["rc"], "message": tail(d)}
    s = emo("score", "--run", run, "--dataset", "mer2026", "--root", mer, "--track", "1", "--features-dir", feats, "--name", "m26",
            "--out", work / "f5_cand.csv", "--device", "cpu", "--no-progress", "--subset", "candidates", "--submission", work / "submission.csv")
    out["subset_candidates_submission"] = {"rc": s["rc"], "message": tail(s, 300) if s["rc"] not in (0, 3) else None}
    if (work / "submission.csv").is_file() and s["rc"] in (0, 3):
        sub = read_csv(work / "submission.csv")
        out["submission"] = {"header": list(sub[0]) if sub else None, "rows": len(sub),
                             "classes": sorted({r.get("discrete") for r in sub}),
                             "all_six_class_names": set(r.get("discrete") for r in sub) <= {"neutral", "angry", "happy", "sad", "worried", "surprise"}}
    out["now"] = ("consistent: candidates by default, split column, submission.csv written"
                  if out.get("default_scoring", {}).get("training_clips_scored") == 0 and "submission" in out else "NOT FIXED")
    return out


def finding6(work: Path, feats: Path) -> dict:
    runs = work / "runs"
    out: dict = {}
    rep = (runs / "f1_default" / "report.md")
    text = rep.read_text(encoding="utf-8") if rep.is_file() else ""
    out["report_md"] = {"states_protocol": "protocol:" in text.lower() and ("speaker-independent" in text.lower() or "speaker-dependent" in text.lower()),
                        "has_warnings_section": "## Warnings" in text, "has_training_time": "training time" in text,
                        "absolute_paths": len(re.findall(r"(?<![\w.])/(?:tmp|work|home)/", text))}
    warns = []
    for name in ("f1_default", "f1_speaker", "f2c", "f2a"):
        warns += jload(runs / name / "config.json").get("warnings", [])
    out["warnings_sample"] = warns[:3]
    out["warnings_with_class_indices"] = sum(bool(re.search(r"class\(es\) \[\d", w)) for w in warns)
    out["warnings_with_class_names"] = sum(bool(re.search(r"class\(es\) \['", w)) for w in warns)
    e = emo("fuse", "ensemble", runs / "f1_default", runs / "f1_speaker", "--out", runs / "f6_ens")
    ens_rep = runs / "f6_ens" / "report.md"
    etext = ens_rep.read_text(encoding="utf-8") if ens_rep.is_file() else ""
    nested_line = next((ln for ln in e["out"].splitlines() if ln.startswith("fused, nested")), "")
    out["ensemble"] = {"rc": e["rc"], "writes_report_md": ens_rep.is_file(), "report_has_interval": "bootstrap interval" in etext,
                       "nested_row": nested_line.strip(), "nested_row_shows_weight_1": " 1.000 " in nested_line,
                       "message": tail(e, 300) if e["rc"] != 0 else None}
    r = emo("fuse", "train", "--dataset", "emodbf", "--features-dir", feats, "--features", "egemaps", "--head", "linear", "--seeds", "1",
            "--folds", "speaker", "--repeats", "2", "--out", runs / "f6_repeats")
    head = r["out"].splitlines()[:3]
    out["repeats"] = {"rc": r["rc"], "table_head": head, "labelled": any("repeat 1 of 2" in ln for ln in head)}
    ok = (out["report_md"]["states_protocol"] and out["report_md"]["absolute_paths"] == 0 and out["warnings_with_class_indices"] == 0
          and out["ensemble"]["writes_report_md"] and not out["ensemble"]["nested_row_shows_weight_1"] and out["repeats"]["labelled"])
    out["now"] = "consistent" if ok else "NOT FIXED"
    return out


def finding7(work: Path, shared: Path, lexicon: Path) -> dict:
    feats = work / "meld_feat"
    out: dict = {}
    if not (feats / "meld" / "nrc_vad.h5").is_file():
        r = emo("extract", "-d", "meld", "-r", shared / "text" / "meld", "-e", "nrc_vad", "--lexicon", lexicon, "-o", feats,
                "--device", "cpu", "--no-progress")
        out["extract_rc"] = r["rc"]
    common = ["--dataset", "meld", "--features-dir", feats, "--features", "nrc_vad", "--folds", "split", "--test-split", "test",
              "--head", "univa", "--seeds", "1", "--epochs", "20", "--patience", "3", "--batch-size", "256", "--label-smoothing", "0",
              "--univa", "--va-source", "transcript", "--lexicon", lexicon]
    for tag, extra in (("eta_1", []), ("eta_0", ["--univa-eta", "0"])):
        run = work / "runs" / f"f7_{tag}"
        r = emo("fuse", "train", *common, *extra, "--out", run)
        m, c = jload(run / "metrics.json"), jload(run / "config.json")
        preds = read_csv(run / "predictions.csv") if (run / "predictions.csv").is_file() else []
        test_preds = [p.get("pred") for p in preds if p.get("fold") == "test"] or [p.get("pred") for p in preds]
        fold = (m.get("folds") or [{}])[0]
        out[tag] = {"rc": r["rc"], "test_waf": round(fold["waf"], 4) if "waf" in fold else None,
                    "test_uar": round(fold["uar"], 4) if "uar" in fold else None,
                    "distinct_predicted_classes": len(set(test_preds)),
                    "most_common": max(set(test_preds), key=test_preds.count) if test_preds else None,
                    "metrics_warnings": m.get("warnings"), "train_warnings": [ln for ln in r["err"].splitlines() if "η" in ln],
                    "eta_vertex_minimum": (c.get("univa") or {}).get("eta_vertex_minimum"),
                    "error": tail(r) if r["rc"] != 0 else None}
    e1 = out["eta_1"]
    out["now"] = ("flagged: the one-class result is a warning in metrics.json, and the train-time warning names the class eq. 9 rewards"
                  if e1.get("metrics_warnings") and any("degenerate" in w or "chance" in w for w in e1["metrics_warnings"]) else "NOT FLAGGED")
    return out


_HELP: dict[str, str] = {}


def has_option(cmd: str, opt: str) -> bool:
    if cmd not in _HELP:
        _HELP[cmd] = emo(*cmd.split(), "--help")["out"]
    return opt in _HELP[cmd]


def _get(d: dict, *path, default=None):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def summary(before: dict, after: dict) -> dict:
    """Per finding, the numbers that show it before (fork commit) and after (this branch)."""
    rows = {}
    for tag, r in (("before", before), ("after", after)):
        f1, f2a, f2b, f2c = (r.get(k, {}) for k in ("finding_1", "finding_2a", "finding_2b", "finding_2c4"))
        f3, f5, f6, f7 = (r.get(k, {}) for k in ("finding_3", "finding_5", "finding_6", "finding_7"))
        rows[tag] = {
            "1_default_pooled_uar": _get(f1, "default", "pooled_uar"), "1_default_folds": _get(f1, "default", "config_folds"),
            "1_default_metrics_has_protocol": _get(f1, "default", "metrics_protocol") is not None,
            "1_speaker_pooled_uar": _get(f1, "speaker", "pooled_uar"), "1_5fold_pooled_uar": _get(f1, "five_fold_asked", "pooled_uar"),
            "1_emobox_rc": _get(f1, "emobox_folds", "rc"),
            "1_emobox_speaker_independent": _get(f1, "emobox_folds", "metrics_protocol", "speaker_independent"),
            "2a_egemaps_max_rel_diff_wav_vs_mp4": _get(f2a, "egemaps_wav_vs_mp4", "max_relative_difference"),
            "2a_score_mp4_rc": _get(f2a, "score_files_rc"), "2a_labels_differ": _get(f2a, "labels_differ"),
            "2a_audio_dir_vs_dataset_different": _get(f2a, "audio_dir_vs_dataset_different"),
            "2b_run_test_uar": _get(f2b, "run_test_uar"), "2b_score_plain": _get(f2b, "score_without_speakers"),
            "2b_score_own_statistics": _get(f2b, "score_with_speakers"), "2b_score_fallback": _get(f2b, "score_fallback_global"),
            "2c_run_records_detector": _get(f2c, "run_records_detector"), "2c_score_haar_rc": _get(f2c, "score_with_haar", "rc"),
            "3_chinese": _get(f3, "chinese_default"), "3_english": _get(f3, "english"),
            "3_make_features_text_column_name": _get(f3, "make_features_passes_text_column_and_name"),
            "4_sweep_fer_xception": _get(f2c, "sweep_fer_xception"), "4_sweep_rare_rc": _get(f2c, "sweep_rare_classes", "rc"),
            "5_default_scoring": _get(f5, "default_scoring"), "5_submission": _get(f5, "submission"),
            "5_subset_rc": _get(f5, "subset_candidates_submission", "rc"),
            "6_report": _get(f6, "report_md"), "6_class_index_warnings": _get(f6, "warnings_with_class_indices"),
            "6_ensemble": _get(f6, "ensemble"), "6_repeats_labelled": _get(f6, "repeats", "labelled"),
            "7_eta_1": {k: _get(f7, "eta_1", k) for k in ("test_waf", "test_uar", "distinct_predicted_classes", "most_common", "metrics_warnings")},
            "7_eta_0": {k: _get(f7, "eta_0", k) for k in ("test_waf", "test_uar", "distinct_predicted_classes", "most_common")},
            "7_eta_vertex_minimum": _get(f7, "eta_1", "eta_vertex_minimum"),
        }
        rows[tag + "_verdicts"] = {k: v.get("now") for k, v in r.items() if isinstance(v, dict) and "now" in v}
        rows[tag + "_verdicts"].update({"2c": f2c.get("finding2c_now"), "4": f2c.get("finding4_now")})
    return rows


def main() -> None:
    ap = parser(__doc__, work=ROOT / "features" / "_proofs" / "seams")
    ap.add_argument("--label", default="after", help="before (fork commit) or after (this branch)")
    ap.add_argument("--out", default=None, help="result file (default results/seams.json for after, else WORK/seams_LABEL.json)")
    ap.add_argument("--merge", default=None, help="a --label before result to put beside this one")
    ap.add_argument("--only", default="", help="comma list of findings to run (1,2a,2b,2c4,3,5,6,7)")
    ap.add_argument("--combine", nargs=2, metavar=("AFTER", "BEFORE"), help="only combine two result files into --out")
    a = parse(ap)
    if a.combine:
        after, before = jload(Path(a.combine[0])), jload(Path(a.combine[1]))
        res = {"issue": 23, "summary": summary(before, after), "after": after, "before": before}
        dest = write_result(Path(a.out or ROOT / "results" / "seams.json"), res, quiet=True)
        print(f"wrote {dest}", file=sys.stderr)
        return
    shared, work = Path(a.shared).resolve(), Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    lexicon = shared / "lexicon" / "NRC-VAD-Lexicon.txt"
    only = set(filter(None, a.only.split(",")))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    t0 = time.perf_counter()
    corpus, feats, emodb = emodb_corpus(shared, work)
    mer, _ = mer_pool(shared, work)
    res: dict = {"label": a.label, "commit": commit, "command": " ".join(["python", *sys.argv])}
    steps = [("1", lambda: finding1(shared, work, feats)), ("2a", lambda: finding2a(work, mer)),
             ("2b", lambda: finding2b(work, feats, corpus, emodb["speakers"])), ("2c4", lambda: finding2c_and_4(work, mer)),
             ("3", lambda: finding3(work, mer, lexicon)), ("5", lambda: finding5(work, mer)), ("6", lambda: finding6(work, feats)),
             ("7", lambda: finding7(work, shared, lexicon))]
    for key, fn in steps:
        if only and key not in only:
            continue
        t = time.perf_counter()
        try:
            res[f"finding_{key}"] = fn()
        except Exception as e:  # a finding that cannot be measured on this checkout: recorded, the others go on
            res[f"finding_{key}"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        res[f"finding_{key}"]["seconds"] = round(time.perf_counter() - t, 1)
        print(f"finding {key}: {res[f'finding_{key}'].get('now', res[f'finding_{key}'].get('error'))}", file=sys.stderr)
    res["seconds_total"] = round(time.perf_counter() - t0, 1)
    if a.merge:
        before = jload(Path(a.merge))
        res = {"issue": 23, "summary": summary(before, res), "after": res, "before": before}
    dest = Path(a.out) if a.out else (ROOT / "results" / "seams.json" if a.label == "after" else work / f"seams_{a.label}.json")
    write_result(dest, res, quiet=True)
    print(f"wrote {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
