"""``emo fuse search``: the typer command (numpy and typer only at import; torch loads inside)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def search_cmd(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name (the folder under --features-dir)."),
    features_dir: Path = typer.Option(Path("features"), "--features-dir", help="Where emo extract wrote the stores."),
    config: Optional[Path] = typer.Option(None, "--config", help="Search space (YAML/JSON): stores (with layers/windows), combine, heads, weight_decay, hidden, dropout, class_weights. Default: every store present, single layers + 3-layer windows + all layers, the L-BFGS linear probe over weight decays 0.01, 0.1, 1, with and without class weights."),
    store: List[str] = typer.Option([], "--store", help="Stores of the default space (repeatable; default: every store of the dataset)."),
    folds: str = typer.Option("speaker", "--folds", help="Outer folds: speaker (leave-one-speaker-out) | K (stratified k-fold) | split (train/test; dev selects)."),
    inner_folds: int = typer.Option(0, "--inner-folds", min=0, help="Inner folds per outer fold: 0 = one per training speaker (speaker), K-1 (k-fold); N = N speaker groups."),
    metric: str = typer.Option("uar", "--metric", help="uar | waf | accuracy: ranks the candidates and is reported."),
    budget: str = typer.Option("", "--budget", help="Wall time (300s, 5m, 1h) or number of candidates (40); default: the whole space."),
    ensemble: int = typer.Option(3, "--ensemble", min=1, help="Members of the decision ensemble chosen in each fold (1: the best candidate alone)."),
    halving: int = typer.Option(3, "--halving", min=0, help="Successive halving eta: rung 0 on 1/eta of the inner folds, the best 1/eta go on (0 or 1: off)."),
    workers: int = typer.Option(0, "--workers", min=0, help="Local worker processes, one torch thread each (0 = the number of CPUs)."),
    scheduler: str = typer.Option("", "--scheduler", help="Address of a dask scheduler (tcp://host:8786): run the candidates on that cluster instead."),
    seed: int = typer.Option(0, "--seed", help="Candidate order (budgets), weight search and bootstrap seed."),
    no_run: bool = typer.Option(False, "--no-run", help="Do not refit and write OUT/run."),
    out: Path = typer.Option(..., "--out", help="Output directory: search.json, leaderboard.csv, report.md, plots, run/, cache/ (rerun to resume)."),
) -> None:
    """Nested search over stores, layer windows, heads and hyper-parameters within a budget.

    Inside every outer fold, inner folds rank the candidates (successive halving cuts weak ones),
    the best are fused with tuned weights, and the outer fold only scores. Reports the nested
    estimate with a speaker-bootstrap interval beside the optimistic same-data estimate and the
    top-10-of-50 protocol, and writes OUT/run (the chosen configuration refitted) for emo score.
    """
    import os
    import sys

    from emo.exitcodes import ExitCode
    from emo.extract.datasets.base import DatasetError
    from emo.extract.store import StoreError
    from emo.fuse.training.data import FeatureError
    from emo.fuse.eval.protocols import ProtocolError
    from emo.fuse.eval.search import SEARCH_METRICS, SearchError, Space, parse_budget, search

    if metric not in SEARCH_METRICS:
        raise typer.BadParameter(f"must be one of {', '.join(SEARCH_METRICS)}", param_hint="--metric")
    try:
        parse_budget(budget)
    except SearchError as e:
        raise typer.BadParameter(str(e), param_hint="--budget") from None
    if folds not in ("speaker", "split") and not folds.isdigit():
        raise typer.BadParameter("must be speaker, split or an integer K", param_hint="--folds")
    space = None
    if config is not None:
        try:
            space = Space.read(config)
        except SearchError as e:
            raise typer.BadParameter(str(e), param_hint="--config") from None
    try:
        r = search(features_dir, dataset, out, space=space, protocol=folds, metric=metric, budget=budget or None,
                   ensemble=ensemble, halving=halving, inner_folds=inner_folds, workers=workers or (os.cpu_count() or 1),
                   scheduler=scheduler or None, seed=seed, stores=list(store) or None, write_run=not no_run,
                   progress=lambda s: typer.echo(s, err=True), command=["emo", *sys.argv[1:]])
    except (SearchError, ProtocolError, FeatureError, StoreError, DatasetError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    n = r["nested"]
    iv = f" [{n['low']:.4f}, {n['high']:.4f}]" if n.get("low") is not None else ""
    m = r["metric"].upper()
    typer.echo(f"nested {m}: {n['estimate']:.4f}{iv} (chosen inside each outer fold)")
    typer.echo(f"optimistic {m} (same data, selection-inflated): {r['optimistic_same_data']['estimate']:.4f}")
    typer.echo(f"top-10-of-50 {m} (MERTools protocol, selection-inflated): {r['top10_of_50']['estimate']:.4f}")
    typer.echo(f"gap optimistic - nested: {r['gap_optimistic_minus_nested']:+.4f}")
    typer.echo(f"search written to {out} ({r['seconds']} s)")
