"""``emo fuse search``: the typer command, generated from :class:`emo.fuse.options.SearchOptions`
(numpy and typer only at import; torch loads inside)."""

from __future__ import annotations

import typer

from emo.cliargs import command, command_line, current_options
from emo.fuse.config import INPUTS, OUTPUT, PROTOCOL
from emo.fuse.options import PARALLEL, SEARCH, SPACE, SearchOptions, read_search_config

#: ``--help`` group order of ``emo fuse search``.
PANELS = (INPUTS, SPACE, PROTOCOL, SEARCH, PARALLEL, OUTPUT)

CONFIG_HELP = ("Options and the search space in one YAML or JSON file: option names as keys, and the space's keys (stores, "
               "combine, heads, weight_decay, hidden, dropout, class_weights), so --config space.yaml declares the space; "
               "options given on the command line override it. OUT/search.json reads back the options a search ran with.")


def search_body(ctx: typer.Context, o: SearchOptions) -> None:
    """Nested search over stores, layer windows, heads and hyper-parameters within a budget.

    Inside every outer fold, inner folds rank the candidates (successive halving cuts weak ones),
    the best are fused with tuned weights, and the outer fold only scores. Reports the nested
    estimate with a speaker-bootstrap interval beside the optimistic same-data estimate and the
    top-10-of-50 protocol, and writes OUT/run (the chosen configuration refitted) for emo score.
    """
    import json
    import os
    from dataclasses import asdict

    from emo.exitcodes import ExitCode
    from emo.extract.datasets.base import DatasetError
    from emo.extract.store import StoreError
    from emo.fuse.eval.protocols import ProtocolError
    from emo.fuse.eval.search import SearchError, search
    from emo.fuse.training.data import FeatureError

    try:
        o.validate()
        space = o.read_space()
    except ValueError as e:  # SearchError included: a bad value or space file is a bad command line
        raise typer.BadParameter(str(e)) from None
    # the resolved options (--config OUT/search.json reads them back): the space itself, not a file that may change
    space_text = json.dumps(asdict(space)) if space is not None else ""
    options = {**current_options(ctx), "space": space_text}
    argv = command_line(ctx, {**ctx.params, "space": space_text or None})
    try:
        r = search(o.features_dir, o.dataset, o.out, space=space, protocol=o.folds, metric=o.metric, budget=o.budget or None,
                   ensemble=o.ensemble, halving=o.halving, inner_folds=o.inner_folds, workers=o.workers or (os.cpu_count() or 1),
                   scheduler=o.scheduler or None, seed=o.seed, n_boot=o.n_boot, stores=list(o.store) or None,
                   write_run=o.write_run, progress=lambda s: typer.echo(s, err=True), command=argv, options=options)
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
    typer.echo(f"search written to {o.out} ({r['seconds']} s); its options: --config {o.out / 'search.json'}")


search_cmd = command(SearchOptions, read_config=read_search_config, config_help=CONFIG_HELP, panels=PANELS)(search_body)
