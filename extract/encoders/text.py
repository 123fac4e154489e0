"""Text encoders through ``transformers``: encoder models (BERT, RoBERTa, MiniLM) and decoder LLMs
(Llama, Qwen2, Baichuan2 via ``trust_remote_code``).

Per-layer utterance vector (the MER 2023/2024 baselines, Lian et al. 2023/2024, pool
every hidden state of a frozen language model over the transcript's tokens):

    ``mean``  e_k = (1 / |R|) * sum_{t in R} h_k[t]      R = real tokens of the transcript
    ``last``  e_k = h_k[max R]                           (hidden state of the last real token)
    ``cls``   e_k = h_k[first non-padding token]         ([CLS] / <s>; BERT-style encoders only)

``h_k`` is hidden state ``k`` as ``transformers`` numbers it with ``output_hidden_states``:
``0`` is the embedding output and ``k`` the output of transformer layer ``k``. *Real* tokens
are the tokenizer's output minus padding (``attention_mask == 0``) and minus the special
tokens it adds (``[CLS]``/``[SEP]``, ``<s>``/``</s>``, ``<bos>``: ``special_tokens_mask``).
Setting ``special_tokens=True`` keeps the special tokens in the mean, which is exactly the
sentence-transformers ``mean_pooling`` (attention-mask-weighted mean of the token embeddings).

The model runs only as deep as the deepest requested layer: the transformer's layer list is
cut there. Some decoders (Llama, Qwen2) apply a final norm to the last hidden state, so the
hidden state at the cut is taken from the raw output of the last kept layer; it equals the
full model's hidden state ``k`` (tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emo.extract.encoders.base import Encoder
from emo.extract.registry import register_encoder
from emo.extract.types import Encoded, EncoderError, Input, TextInput, autocast_dtype, hash_weights, torch_device

#: ``config.model_type`` values of decoder-only LLMs (also detected via ``*ForCausalLM`` architectures).
DECODER_MODEL_TYPES = frozenset({
    "llama", "qwen", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "baichuan", "mistral", "mixtral", "gemma",
    "gemma2", "gemma3_text", "phi", "phi3", "gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "chatglm",
    "internlm", "internlm2", "yi", "deepseek", "deepseek_v2", "deepseek_v3", "olmo", "olmo2", "stablelm",
    "starcoder2", "cohere", "glm", "glm4", "granite", "mpt", "codegen",
})

POOLINGS = ("mean", "last", "cls")


def is_decoder_config(config: Any) -> bool:
    """True for decoder-only (causal) language models.

    Detected by ``config.is_decoder``, an architecture name ending in ``ForCausalLM`` /
    ``LMHeadModel``, or a ``model_type`` in :data:`DECODER_MODEL_TYPES`. Encoder-decoder
    models (T5, BART) are not decoders here.
    """
    if getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "is_decoder", False):
        return True
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return True
    return str(getattr(config, "model_type", "")).lower() in DECODER_MODEL_TYPES


def find_layer_list(model: Any, n_layers: int):
    """Return ``(parent_module, attribute_name, module_list)`` of the transformer's layer stack.

    Looks for the usual places (``encoder.layer`` for BERT/RoBERTa, ``layers`` for Llama/Qwen2/
    Baichuan, ``h`` for GPT-2, ``decoder.layers``), then for any ``nn.ModuleList`` of length
    ``n_layers``.

    Raises:
        EncoderError: no such list (the model's class is named).
    """
    import torch.nn as nn

    for path in ("encoder.layer", "layers", "h", "decoder.layers", "model.layers", "transformer.h",
                 "transformer.layers", "encoder.layers"):
        parent, ok = model, True
        *head, last = path.split(".")
        for part in head:
            parent = getattr(parent, part, None)
            if parent is None:
                ok = False
                break
        if ok:
            lst = getattr(parent, last, None)
            if isinstance(lst, nn.ModuleList) and len(lst) == n_layers:
                return parent, last, lst
    for _, mod in model.named_modules():
        for attr, child in mod.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == n_layers:
                return mod, attr, child
    raise EncoderError(f"cannot find the {n_layers}-layer stack of {type(model).__name__} to truncate it")


def _looks_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


@register_encoder(
    "roberta", "hfl/chinese-roberta-wwm-ext",
    summary="Chinese RoBERTa-wwm-ext, mean over real tokens per layer",
)
@register_encoder(
    "minilm", "sentence-transformers/all-MiniLM-L6-v2",
    summary="all-MiniLM-L6-v2 (6-layer BERT), mean over real tokens per layer",
)
@register_encoder(
    "baichuan2_13b", "baichuan-inc/Baichuan2-13B-Base",
    options={"needs_remote_code": True},
    summary="Baichuan2-13B decoder LLM, 41 hidden states x 5120",
)
class TextEncoder(Encoder):
    """Per-layer transcript embeddings from a ``transformers`` language model.

    Args:
        name: registry name (``roberta``, ``minilm``, ``baichuan2_13b``); the store file name.
        source: hub id or local directory with ``config.json``, tokenizer files and weights.
        layers: hidden-state keys ``"0"`` .. ``str(num_hidden_layers)``; ``None`` = all.
        device: ``"cpu"`` or ``"cuda[:N]"`` (bf16 weights and autocast there; fp32 on CPU).
        frames: also return per-token features, shape (T, D) over the real tokens, per layer.
        options:
            ``trust_remote_code`` (bool, default False): run Python code shipped in the model
            repository; only on the user's explicit opt-in (``emo extract --trust-remote-code``),
            with a warning. ``needs_remote_code`` (registry option, Baichuan2): refuse to load
            without that opt-in, naming the flag,
            ``pooling`` ``"mean"`` (default), ``"last"`` or ``"cls"`` (the hidden state of the
            ``[CLS]``/``<s>`` token the tokenizer puts first, as BERT's sentence classifiers read it;
            encoder models only),
            ``max_tokens`` (int, default 512, capped by the model's position table): longer
            transcripts are truncated and flagged ``truncated``,
            ``dtype`` (``"float32"``, ``"bfloat16"``, ``"float16"``; default bf16 on CUDA, fp32 on CPU),
            ``special_tokens`` (bool, default False): include special tokens in the mean.

    Raises:
        EncoderError: the source cannot be loaded (named), an unknown pooling, a bad ``max_tokens``.
        emo.extract.layers.LayerSpecError: requested layers the model lacks.
    """

    modality = "text"

    def __init__(
        self,
        name: str,
        source: str | None = None,
        layers: list[str] | None = None,
        device: str = "cpu",
        frames: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name, source, layers, device, frames, **options)
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if not source:
            raise EncoderError(f"{name}: a text encoder needs a source (hub id or local model directory)")
        self.trust_remote_code = bool(options.get("trust_remote_code", False))
        if options.get("needs_remote_code") and not self.trust_remote_code:
            raise EncoderError(f"{name}: {source} runs Python code shipped in its model repository (trust_remote_code); "
                               "review that code, then pass --trust-remote-code to allow it")
        if self.trust_remote_code:
            import warnings

            warnings.warn(f"{name}: trust_remote_code is on: Python code from {source} will run with your permissions",
                          stacklevel=2)
        self.pooling = str(options.get("pooling") or "mean")
        if self.pooling not in POOLINGS:
            raise EncoderError(f"{name}: pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        self.special_tokens = bool(options.get("special_tokens", False))
        try:
            max_tokens = int(options.get("max_tokens") or 512)
        except (TypeError, ValueError):
            raise EncoderError(f"{name}: max_tokens must be an integer, not {options.get('max_tokens')!r}") from None
        if max_tokens < 2:
            raise EncoderError(f"{name}: max_tokens must be at least 2, not {max_tokens}")
        self._device = torch_device(device)

        src = str(Path(source).expanduser()) if _looks_local(source) else source
        if _looks_local(source) and not Path(src).is_dir():
            raise EncoderError(f"{name}: model directory {src} does not exist")
        self.source = src
        try:
            self.config = AutoConfig.from_pretrained(src, trust_remote_code=self.trust_remote_code)
            self.tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=self.trust_remote_code)
        except Exception as e:  # OSError (missing files / unreachable hub), ValueError (unknown model type)
            raise EncoderError(f"{name}: cannot load config/tokenizer from {src}: {e}") from e
        self.is_decoder = is_decoder_config(self.config)
        n_layers = int(getattr(self.config, "num_hidden_layers", 0) or getattr(self.config, "n_layer", 0))
        if n_layers <= 0:
            raise EncoderError(f"{name}: {src}/config.json gives no num_hidden_layers")
        self.n_layers = n_layers
        self.hidden_size = int(getattr(self.config, "hidden_size", 0) or getattr(self.config, "n_embd", 0))
        self._select()
        numeric = [int(k) for k in self.layers]
        self.depth = max(numeric) if numeric else 0

        max_pos = getattr(self.config, "max_position_embeddings", None)
        if self.config.model_type in ("roberta", "xlm-roberta", "camembert") and max_pos:
            max_pos -= 2  # RoBERTa's position table starts after padding_idx
        self.max_tokens = min(max_tokens, int(max_pos)) if max_pos else max_tokens

        tok = self.tokenizer
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise EncoderError(f"{name}: tokenizer of {src} has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        if self.is_decoder:
            tok.padding_side = "right"
        if self.pooling == "cls" and (self.is_decoder or tok.cls_token_id is None and tok.bos_token_id is None):
            raise EncoderError(f"{name}: pooling=cls reads the [CLS]/<s> token of a BERT-style encoder; {src} is "
                               f"{'a decoder LLM' if self.is_decoder else 'a model whose tokenizer has no [CLS]/<s> token'} "
                               "(use pooling=mean or last)")

        if options.get("dtype"):
            try:
                dtype = getattr(torch, str(options["dtype"]))
                assert isinstance(dtype, torch.dtype)
            except (AttributeError, AssertionError):
                raise EncoderError(f"{name}: unknown dtype {options['dtype']!r}") from None
        else:
            dtype = torch.bfloat16 if self._device.type == "cuda" else torch.float32
        self.dtype = dtype
        kw = {"trust_remote_code": self.trust_remote_code, "dtype": dtype}
        try:
            model = AutoModel.from_pretrained(src, **kw)
        except ValueError:
            if not self.is_decoder:
                raise
            # remote-code decoders (Baichuan2) may map only AutoModelForCausalLM: take its base model
            from transformers import AutoModelForCausalLM

            try:
                model = AutoModelForCausalLM.from_pretrained(src, **kw)
            except Exception as e:
                raise EncoderError(f"{name}: cannot load model weights from {src}: {e}") from e
            base = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
            if base is None:
                raise EncoderError(f"{name}: cannot find the base model inside {type(model).__name__}")
            model = base
        except Exception as e:
            raise EncoderError(f"{name}: cannot load model weights from {src}: {e}") from e

        # Run only as deep as the deepest requested layer (at least one layer is kept so that
        # hidden state 0 is the input of layer 1, never a final-normed embedding).
        self._cut_hook = None
        self._cut_out: list[Any] = []
        keep = max(self.depth, 1)
        if keep < n_layers:
            parent, attr, stack = find_layer_list(model, n_layers)
            kept = torch.nn.ModuleList(list(stack)[:keep])
            setattr(parent, attr, kept)
            if self.depth >= 1:
                self._cut_hook = kept[-1].register_forward_hook(self._record_cut)
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False
        self.model = model.to(self._device).eval()
        self._autocast = autocast_dtype(str(self._device))

    # -- interface ---------------------------------------------------------------
    def _record_cut(self, module, args, output) -> None:
        self._cut_out.append(output[0] if isinstance(output, (tuple, list)) else output)

    def available_layers(self) -> list[str]:
        """Hidden-state keys ``"0"`` (embeddings) .. ``str(num_hidden_layers)``."""
        return [str(k) for k in range(self.n_layers + 1)]

    def dims(self) -> dict[str, int]:
        """``hidden_size`` from the config for every selected layer (384 for MiniLM-L6, 5120 for Baichuan2-13B)."""
        return {k: self.hidden_size for k in self.layers}

    def cost(self, item: Input) -> float:
        """Token count of the transcript (with special tokens, capped at ``max_tokens``); 0 when empty."""
        text = getattr(item, "text", "") or ""
        if not text.strip():
            return 0.0
        n = len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
        return float(min(n, self.max_tokens))

    def provenance(self) -> dict[str, Any]:
        """Base provenance plus pooling, tokenizer class and name, ``max_tokens``, special-token handling."""
        out = super().provenance()
        out.update({
            "pooling": self.pooling,
            "tokenizer": f"{type(self.tokenizer).__name__}:{getattr(self.tokenizer, 'name_or_path', '')}",
            "max_tokens": int(self.max_tokens),
            "special_tokens": bool(self.special_tokens),
            "decoder": bool(self.is_decoder),
        })
        return out

    def weights_hash(self) -> str:
        """:func:`hash_weights` of the source (content of local weight files; the id for a hub name)."""
        return hash_weights(self.source)

    def encode(self, batch: list[Input]) -> list[Encoded]:
        """Encode transcripts together (one padded forward pass).

        Args:
            batch: :class:`TextInput` items; empty or whitespace-only text gives zero vectors
                (float32, shape (D,)) and the flag ``no_text``, without running the model.

        Returns:
            One :class:`Encoded` per item: ``layers[k]`` float32 (D,) pooled as :attr:`pooling`;
            with ``frames``, ``frames[k]`` float32 (T, D) over the real tokens. Transcripts longer
            than ``max_tokens`` are truncated and flagged ``truncated``.

        Raises:
            EncoderError: an input that is not a :class:`TextInput`, or the forward pass fails.
        """
        import torch

        for it in batch:
            if not isinstance(it, TextInput):
                raise EncoderError(f"{self.name}: expected TextInput, got {type(it).__name__} for {getattr(it, 'name', '?')}")
        results: list[Encoded | None] = [None] * len(batch)
        todo = [i for i, it in enumerate(batch) if (it.text or "").strip()]
        for i, it in enumerate(batch):
            if not (it.text or "").strip():
                results[i] = self._empty()
        if todo:
            texts = [batch[i].text.strip() for i in todo]
            full_len = [len(x) for x in self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
            enc = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_tokens,
                return_special_tokens_mask=True, return_tensors="pt",
            )
            special = enc.pop("special_tokens_mask").bool()
            attn = enc["attention_mask"].bool()
            real = attn if self.special_tokens else attn & ~special
            inputs = {k: v.to(self._device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            try:
                hs = self._forward(inputs)
            except Exception as e:
                names = ", ".join(batch[i].name for i in todo[:5])
                raise EncoderError(f"{self.name}: forward pass failed for [{names}{', ...' if len(todo) > 5 else ''}]: {e}") from e
            real_d = real.to(self._device)
            pooled: dict[str, np.ndarray] = {}
            for k in self.layers:
                h = hs[int(k)].float()  # (B, T, D)
                if self.pooling == "mean":
                    m = real_d.unsqueeze(-1).to(h.dtype)
                    p = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
                elif self.pooling == "cls":  # the first non-padding token: [CLS] / <s>
                    first = attn.to(h.device).int().argmax(1)
                    p = h[torch.arange(h.shape[0], device=h.device), first]
                else:
                    idx = torch.arange(real_d.shape[1], device=h.device).expand_as(real_d)
                    last = torch.where(real_d, idx, torch.full_like(idx, -1)).max(1).values.clamp(min=0)
                    p = h[torch.arange(h.shape[0], device=h.device), last]
                pooled[k] = p.cpu().numpy().astype(np.float32)
            for j, i in enumerate(todo):
                if not bool(real[j].any()):  # only special tokens survived
                    results[i] = self._empty()
                    continue
                frames = None
                if self.frames:
                    sel = real_d[j]
                    frames = {k: hs[int(k)][j][sel].float().cpu().numpy() for k in self.layers}
                flags = {"truncated"} if full_len[j] > self.max_tokens else set()
                results[i] = Encoded(layers={k: pooled[k][j] for k in self.layers}, frames=frames, flags=flags)
        return [r for r in results if r is not None]

    # -- internals ---------------------------------------------------------------
    def _empty(self) -> Encoded:
        d = self.hidden_size
        z = {k: np.zeros(d, np.float32) for k in self.layers}
        fr = {k: np.zeros((0, d), np.float32) for k in self.layers} if self.frames else None
        return Encoded(layers=z, frames=fr, flags={"no_text"})

    def _forward(self, inputs: dict[str, Any]) -> dict[int, Any]:
        """Hidden states 0..depth of the (truncated) model, index -> (B, T, D) tensor."""
        import torch

        self._cut_out.clear()
        with torch.inference_mode(), torch.autocast(self._device.type, dtype=self._autocast,
                                                     enabled=self._autocast is not None):
            out = self.model(**inputs, output_hidden_states=True, use_cache=False) if self.is_decoder \
                else self.model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states
        got = {i: hidden[i] for i in range(min(len(hidden), self.depth + 1))}
        if self._cut_hook is not None:
            if not self._cut_out:
                raise EncoderError(f"{self.name}: the last kept layer produced no output")
            got[self.depth] = self._cut_out[-1]
        missing = [i for i in range(self.depth + 1) if i not in got]
        if missing:
            raise EncoderError(f"{self.name}: model returned {len(hidden)} hidden states, need {self.depth + 1}")
        return got

