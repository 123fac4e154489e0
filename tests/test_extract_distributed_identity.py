"""dask extraction (emo.extract.distributed): a finished sample whose media changed is recomputed, as
in a local run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

EMODB = Path(os.environ.get("EMO_SHARED_DATA", "/work/shared/data")) / "emodb" / "wav"


def test_distributed_recomputes_a_sample_whose_media_changed(tmp_path):
    import shutil

    from distributed import Client, LocalCluster

    from emo.extract.datasets import get_dataset
    from emo.extract.distributed import ExtractConfig, run_distributed
    from emo.extract.engine import Extractor
    from emo.extract.registry import parse_encoder_spec
    from emo.extract.store import FeatureStore

    wavs = sorted(EMODB.glob("*.wav"))
    root = tmp_path / "clips"
    root.mkdir()
    for w in wavs[:3]:
        shutil.copy(w, root / w.name)
    config = ExtractConfig(encoders=("egemaps",), decode_workers=1)
    adapter = get_dataset("folder", str(root), dataset_name="folder")
    out = tmp_path / "dask"
    cluster = LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    try:
        first = run_distributed(config, adapter, out=out, client=client, shard_size=2, progress=False)
        assert first.n_failed == 0 and first.encoders[0].done == 3
        changed = root / wavs[1].name
        shutil.copy(wavs[10], changed)  # same name, another recording
        second = run_distributed(config, adapter, out=out, client=client, shard_size=2, progress=False)
    finally:
        client.close()
        cluster.close()
    rep = second.encoders[0]
    assert list(rep.recomputed) == [changed.stem] and "content changed" in rep.recomputed[changed.stem]
    assert rep.done == 1 and rep.skipped == 2 and second.n_tasks == 1
    # the store now holds the new recording's features: those of a fresh local run over the same folder
    ref = tmp_path / "ref"
    Extractor([parse_encoder_spec("egemaps")], out=ref, decode_workers=1, progress=False).run(adapter)
    a, b = FeatureStore(out / "folder" / "egemaps.h5"), FeatureStore(ref / "folder" / "egemaps.h5")
    names = sorted(b.names)
    assert sorted(a.names) == names
    np.testing.assert_array_equal(a.read_layer("functionals", names=names), b.read_layer("functionals", names=names))
    assert a.identity(changed.stem) == b.identity(changed.stem)

