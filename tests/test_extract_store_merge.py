"""The store as a pure reader with an explicit merge (`emo store merge`), info columns through shards
and merges, the face detector in the store identity (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import toy_provenance
from typer.testing import CliRunner

from emo.cli import app
from emo.extract.store import FeatureStore, StoreWriter, pending_shards
from emo.extract.types import Encoded


def test_store_merge_cli_and_pure_reader(tmp_path):
    path = tmp_path / "ds" / "toy.h5"
    w = StoreWriter(path, toy_provenance(), ["1"], shard_size=1)
    for i in range(3):
        w.add(f"s{i}", Encoded({"1": np.full(4, i, np.float32)}))
    w.close()  # shards only, as after an interrupted run
    assert len(pending_shards(path)) == 3
    r = CliRunner().invoke(app, ["store", "info", str(path)])
    assert r.exit_code == 1 and "emo store merge" in r.output
    assert len(pending_shards(path)) == 3  # reading changed nothing
    r = CliRunner().invoke(app, ["store", "merge", str(path)])
    assert r.exit_code == 0 and "merged 3 shard(s)" in r.output, r.output
    held = StoreWriter(path, toy_provenance(), ["1"], shard_size=1)
    held.add("s3", Encoded({"1": np.full(4, 3, np.float32)}))
    held.close()  # one shard pending again
    r = CliRunner().invoke(app, ["store", "info", str(path)])
    assert r.exit_code == 0 and '"pending_shards": 1' in r.output and '"samples": 3' in r.output, r.output
    r = CliRunner().invoke(app, ["store", "merge", str(path)])
    assert r.exit_code == 0 and "merged 1 shard(s)" in r.output
    assert FeatureStore(path).read_layer("1")[:, 0].tolist() == [0, 1, 2, 3] and not pending_shards(path)
    r = CliRunner().invoke(app, ["store", "merge", str(path)])
    assert r.exit_code == 0 and "nothing to merge" in r.output
    held = StoreWriter(path, toy_provenance(), ["1"])
    try:
        r = CliRunner().invoke(app, ["store", "merge", str(path)])
        assert r.exit_code == 1 and "in use by PID" in r.output
    finally:
        held.close()


def test_info_columns_survive_shards_and_merge(tmp_path):
    """Per-sample counts (face_frames, frames_sampled) go through shards and the merge; -1 where unknown."""
    path = tmp_path / "ds" / "face.h5"
    prov = toy_provenance(modality="face", face_detector="haar")
    w = StoreWriter(path, prov, ["1"], shard_size=2)
    for i in range(3):
        w.add(f"s{i}", Encoded({"1": np.full(4, i, np.float32)}, flags={"no_face"} if i == 0 else set(),
                               info={"face_frames": 2 * i, "frames_sampled": 4}))
    w.add("old", Encoded({"1": np.zeros(4, np.float32)}))  # no counts (e.g. an encoder that gives none)
    w.finalize()
    w.close()
    s = FeatureStore(path)
    assert s.info_keys == ["face_frames", "frames_sampled"]
    assert s.info("face_frames").tolist() == [0, 2, 4, -1] and s.info("frames_sampled", ["s1"]).tolist() == [4]
    assert s.info("nope") is None
    assert s.flag_counts() == {"no_face": 1, "no_text": 0, "silent": 0, "truncated": 0}
    assert s.face_coverage() == {"clips": 3, "frames_sampled": 12, "frames_with_face": 6, "coverage": 0.5,
                                 "clips_without_face": 1}
    summary = s.summary()
    assert summary["face_detector"] == "haar" and summary["flags"]["no_face"] == 1


def test_face_detector_is_part_of_the_store_identity(tmp_path):
    """A rerun with another face detector must not append to a store written with a different one."""
    from emo.extract.store import StoreError

    path = tmp_path / "ds" / "face.h5"
    w = StoreWriter(path, toy_provenance(modality="face", face_detector="haar"), ["1"])
    w.add("a", Encoded({"1": np.zeros(2, np.float32)}))
    w.close()
    with pytest.raises(StoreError, match="face_detector: store has 'haar', this run has 'mtcnn'"):
        StoreWriter(path, toy_provenance(modality="face", face_detector="mtcnn"), ["1"])

