"""Build a corpus of awkward and broken media from real clips (PyAV), for reliability tests and proofs.

Every builder writes one file into ``folder`` and returns its path. Sources are real
recordings under ``<shared>/av`` and ``<shared>/emodb``; nothing is copied into the repo.
"""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

#: Real source clips (relative to <shared>/av): a 224x224 talking face with 16 kHz audio,
#: a 1080p MEAD clip with AAC 48 kHz, and the MELD clip with 5.1 audio.
FACE_CLIP = "lrs3_spectre/00002.mp4"
HD_CLIP = "mead_spectre/M003_level_1_happy_024.mp4"
MELD_51 = "meld_hudsonmendes"


def _meld(shared: Path) -> Path:
    return next(p for p in sorted((shared / "av" / MELD_51).iterdir()) if p.suffix == ".mp4")


def _frames(src: Path, n: int | None = None, gray: bool = False) -> tuple[list[np.ndarray], float]:
    import av

    out = []
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate or 25)
        for f in c.decode(s):
            out.append(f.to_ndarray(format="gray" if gray else "rgb24"))
            if n is not None and len(out) >= n:
                break
    return out, rate


def _write_video(path: Path, frames: list[np.ndarray], rate: float, pix_fmt: str = "yuv420p",
                 fmt: str = "rgb24", pts_ms: list[int] | None = None, audio: np.ndarray | None = None,
                 sample_rate: int = 16000) -> Path:
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        h, w = frames[0].shape[:2]
        v.width, v.height, v.pix_fmt = w // 2 * 2, h // 2 * 2, pix_fmt
        if pts_ms is not None:
            v.codec_context.time_base = Fraction(1, 1000)
        a = None
        if audio is not None:
            a = c.add_stream("aac", rate=sample_rate)
            a.layout = "mono"
        for i, img in enumerate(frames):
            img = np.ascontiguousarray(img[: v.height, : v.width])
            vf = av.VideoFrame.from_ndarray(img, format=fmt)
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[i], Fraction(1, 1000)
            for p in v.encode(vf):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            _encode_audio(c, a, audio, sample_rate, "mono")
    return path


def _encode_audio(c, stream, audio: np.ndarray, sample_rate: int, layout: str) -> None:
    import av

    x = np.atleast_2d(audio.astype(np.float32))  # (channels, T)
    step = 1024
    for i in range(0, x.shape[1], step):
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + step]), format="fltp", layout=layout)
        fr.sample_rate = sample_rate
        for p in stream.encode(fr):
            c.mux(p)
    for p in stream.encode():
        c.mux(p)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM mono WAV (``wave`` module) from float audio in [-1, 1]."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def _remux(src: Path, dst: Path, kind: str) -> Path:
    """Copy only the ``kind`` ("video" or "audio") stream of ``src`` into ``dst`` without re-encoding."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        s_in = i.streams.video[0] if kind == "video" else i.streams.audio[0]
        s_out = o.add_stream_from_template(s_in)
        for pkt in i.demux(s_in):
            if pkt.dts is None:
                continue
            pkt.stream = s_out
            o.mux(pkt)
    return dst


def build_corpus(shared: Path, folder: Path, long_minutes: float = 10.0) -> dict[str, dict]:
    """Write every awkward/broken media case into ``folder``.

    Returns ``{case: {"file": Path, "expect": {...}}}`` where ``expect`` maps a modality
    (``audio``/``face``) to ``"ok"`` (features stored) or ``"fail"`` (a per-sample error record
    naming the file), or ``"either"`` where both are correct behaviour (a truncated file
    may keep its decodable part).
    """
    from emo.extract.media import load_audio

    folder.mkdir(parents=True, exist_ok=True)
    av_dir = shared / "av"
    face = av_dir / FACE_CLIP
    hd = av_dir / HD_CLIP
    emodb = sorted((shared / "emodb" / "wav").glob("*.wav"))
    speech = load_audio(emodb[0], 16000)
    cases: dict[str, dict] = {}

    def add(case, path, audio, face_):
        cases[case] = {"file": path, "expect": {"audio": audio, "face": face_}}

    p = folder / "zero_byte.mp4"
    p.write_bytes(b"")
    add("zero_byte", p, "fail", "fail")

    data = hd.read_bytes()
    p = folder / "truncated_mp4.mp4"
    p.write_bytes(data[: len(data) * 2 // 5])
    add("truncated_mp4", p, "either", "either")

    mpg = av_dir / "grid_lipnet" / "bbaf2n.mpg"  # MPEG-PS: a cut file still decodes up to the cut
    data = mpg.read_bytes()
    p = folder / "truncated_mpg.mpg"
    p.write_bytes(data[: len(data) // 2])
    add("truncated_mpg", p, "either", "either")

    add("no_audio_stream", _remux(face, folder / "no_audio.mp4", "video"), "ok", "ok")  # silent flag (issue 11)
    add("no_video_stream", _remux(hd, folder / "no_video.m4a", "audio"), "ok", "fail")
    add("silent_audio", write_wav(folder / "silent.wav", np.zeros(3 * 16000, np.float32), 16000), "ok", "fail")
    add("clip_0.1s", write_wav(folder / "short_0.1s.wav", speech[:1600], 16000), "ok", "fail")
    # 10 minutes of real speech: EmoDB utterances end to end
    need = int(long_minutes * 60 * 16000)
    parts, total = [], 0
    for w in emodb:
        a = load_audio(w, 16000)
        parts.append(a)
        total += a.size
        if total >= need:
            break
    add("clip_10min", write_wav(folder / "long_10min.wav", np.concatenate(parts)[:need], 16000), "ok", "fail")

    odd = folder / "it's a \"clip\" 情绪 é.mp4"
    odd.write_bytes(face.read_bytes())
    add("name_spaces_quotes_unicode", odd, "ok", "ok")

    frames, rate = _frames(face, gray=True)
    audio = load_audio(face, 16000)
    add("grayscale_video", _write_video(folder / "grayscale.mp4", frames, rate, pix_fmt="gray", fmt="gray",
                                        audio=audio), "ok", "ok")
    add("audio_8khz", write_wav(folder / "speech_8khz.wav", load_audio(emodb[1], 8000), 8000), "ok", "fail")
    p = folder / "meld_5.1.mp4"
    p.symlink_to(_meld(shared))  # the real MELD clip with 5.1 audio
    add("audio_5.1", p, "ok", "ok")

    frames, rate = _frames(face)
    rng = np.random.default_rng(0)
    pts = np.cumsum(np.r_[0, rng.choice([20, 40, 100], size=len(frames) - 1)]).astype(int).tolist()
    add("variable_frame_rate", _write_video(folder / "vfr.mp4", frames, rate, pts_ms=pts, audio=audio), "ok", "ok")

    hd_frames, hd_rate = _frames(hd, n=50)
    corner = [f[:360, :480] for f in hd_frames]  # studio background beside the speaker: no face
    add("no_face", _write_video(folder / "no_face.mp4", corner, hd_rate, audio=audio[: 2 * 16000]), "ok", "ok")
    return cases
