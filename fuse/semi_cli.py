"""`emo fuse align` (CLIPL-A) and `emo fuse pseudo-label` (self-training); torch loads inside the commands."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from emo.cliargs import command, current_options
from emo.fuse.config import INPUTS, METHODS, OPTIM, OUTPUT, PROTOCOL, TASK
from emo.fuse.options import AlignOptions, PseudoLabelOptions

#: ``--help`` group order.
PANELS = (INPUTS, TASK, PROTOCOL, METHODS, OPTIM, OUTPUT)


@command(AlignOptions, panels=PANELS, unpack=True)
def align_cmd(ctx: typer.Context, dataset: str, source: str, target: str, out: Path, features_dir: Path, epochs: int, batch_size: int, lr: float, holdout: float, seed: int, device: str, write: bool, overwrite: bool) -> None:
    """CLIPL-A (MRAC '24 eq. 5-7): align a visual feature to an audio feature with a vision MLP and a symmetric
    InfoNCE; uses every clip with both features (labels never read); reports audio<->video retrieval on held-out clips."""
    from emo.extract.store import StoreError
    from emo.fuse.methods.align import AlignError, align, write_aligned_store
    from emo.fsio import write_json
    from emo.fuse.training.data import FeatureError

    command = ["emo", "fuse", "align", "--dataset", dataset, "--features-dir", str(features_dir), "--source", source,
               "--target", target, "--out", str(out), "--epochs", str(epochs), "--batch-size", str(batch_size),
               "--lr", str(lr), "--holdout", str(holdout), "--seed", str(seed), "--device", device,
               *(["--write"] if write else []), *(["--overwrite"] if overwrite else [])]
    try:
        cfg = align(features_dir, dataset, source, target, out, epochs=epochs, batch_size=batch_size, lr=lr,
                    holdout=holdout, seed=seed, device=device, command=command)
        path = write_aligned_store(out, features_dir, dataset, overwrite=overwrite) if write else None
    except (AlignError, FeatureError, StoreError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    r = cfg["retrieval"]
    typer.echo(f"clips: {cfg['n_train']} train, {cfg['n_holdout']} held out ({len(cfg['excluded_all_zero'])} all-zero left out); "
               f"temperature {cfg['temperature']:.4f}")
    typer.echo(f"{'held-out retrieval':<22}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'median rank':>13}")
    ho = r["after"]["holdout"]
    if ho is not None:
        for when in ("before", "after"):
            for d in ("audio_to_video", "video_to_audio"):
                m = r[when]["holdout"][d]
                typer.echo(f"{when + ' ' + d.replace('_to_', '->'):<22}{m['R@1']:>8.3f}{m['R@5']:>8.3f}{m['R@10']:>8.3f}{m['median_rank']:>13.1f}")
        c = ho["chance"]
        typer.echo(f"{'chance':<22}{c['R@1']:>8.3f}{c['R@5']:>8.3f}{c['R@10']:>8.3f}{c['median_rank']:>13.1f}")
    write_json(out / "options.json", {"command": command, "options": current_options(ctx)})  # --config reads it back
    typer.echo(f"run written to {out}")
    if path is not None:
        typer.echo(f"aligned features written to {path} (use --features {path.stem})")


@command(PseudoLabelOptions, panels=PANELS, unpack=True)
def pseudo_label_cmd(run: Path, dataset: str, out: Path, features_dir: Path, subset: str, threshold: float, top_k: int, align: str) -> None:
    """Score unlabelled clips with a run's fold ensemble and keep the confident ones as pseudo-labels
    (for emo fuse train --pseudo-labels)."""
    from emo.extract.datasets.base import DatasetError
    from emo.extract.store import StoreError
    from emo.fuse.training.data import FeatureError
    from emo.fuse.methods.pseudo import PseudoLabelError, pseudo_label
    from emo.fuse.run import RunError

    command = ["emo", "fuse", "pseudo-label", *sys.argv[3:]] if len(sys.argv) > 3 else None
    try:
        meta = pseudo_label(run, features_dir, dataset, out, subset=subset, threshold=threshold, top_k=top_k or None,
                            align=align, command=command)
    except (PseudoLabelError, RunError, FeatureError, StoreError, DatasetError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{meta['n_kept']} of {meta['n_scored']} clips kept (threshold {threshold}"
               f"{f', top {top_k} per class' if top_k else ''}); per class: "
               + ", ".join(f"{c} {n}" for c, n in meta["per_class"].items()))
    typer.echo(f"pseudo-labels written to {out}")
