"""Bottleneck adapters in a window of transformer layers, and the prefix-cached forward (HLFT).

Source: Zhao, Chen, Li, Jiang, Xie, "Improving Multimodal Emotion Recognition by Leveraging
Acoustic Adaptation and Visual Alignment" (MRAC '24, the MER 2024-SEMI paper), acoustic adaptation, eq. 1: in each of
the ``k`` consecutive transformer layers of a window (16–21 of HuBERT-large in the paper) a
bottleneck adapter

    y = x + ReLU(W_up · ReLU(W_down x + b_down) + b_up)                              (eq. 1)

with bottleneck d̂ = 128 is trained while every encoder weight stays frozen.

**Where the adapter sits.** The paper's figure places it inside each layer without naming the
exact point; here it is applied to the output of the layer's *feed-forward sub-layer*, before
that layer's residual add and layer norm (the Houlsby et al. 2019 position):

* HuBERT / wav2vec 2.0 / WavLM (post-LN, ``do_stable_layer_norm=False``):
  ``h = LN(h + Adapter(FFN(h)))``  (the wrapped module is ``layer.feed_forward``);
* the stable-layer-norm variants (HuBERT-large, wav2vec2-large, pre-LN):
  ``h = h + Adapter(FFN(LN(h)))``  (same module);
* BERT / RoBERTa / MiniLM: ``BertOutput`` computes ``LN(dropout(dense(x)) + residual)``; the
  adapter wraps ``output.dropout``, so ``h = LN(Adapter(dropout(dense(x))) + residual)``.

W_up and b_up start at zero, so ``ReLU(0) = 0`` and every adapter starts as the identity: an
untrained adapter set reproduces the frozen features exactly. W_down uses PyTorch's default
``nn.Linear`` initialisation (the paper is silent).

**Prefix caching.** Tuning layers a..b never changes layers 1..a-1, so the hidden state entering
layer a (hidden state ``a-1`` in emo's numbering: ``emo extract --encoder NAME:a-1 --frames``,
stored frame-level with the offsets layout) is computed once; :class:`AdaptedWindow` runs only
layers a..b from it, with the padding mask built by the same ``transformers`` function
(``masking_utils.create_bidirectional_mask``) the full model uses for its configured attention
implementation (eager: additive 4D float mask; SDPA: boolean 4D mask, or none without padding).
In float32 it equals the full forward on the valid frames (max abs difference < 1e-4, tested);
from a float16 store the prefix carries float16 rounding (relative 5e-4).

The frozen layers always run in eval mode (no dropout, no LayerDrop), also while the adapters
train: the paper is silent, and this keeps the cached and the full path identical.

Adapter sets are saved as safetensors (:func:`save_adapters`) with their settings in the file's
metadata, and identified by the file's SHA-256 (:func:`emo.fsio.sha256_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emo import fsio
from emo.extract.types import AdapterError  # noqa: F401  (defined without torch, so `emo extract` can catch it without importing torch)
from emo.fsio import sha256_file

#: Bottleneck dimension d̂ of eq. 1 (the paper's value).
ADAPTER_DIM = 128

#: Metadata format of a saved adapter set.
ADAPTER_FORMAT = "emo-hlft-adapters-1"


# ---------------------------------------------------------------------------
# eq. 1
# ---------------------------------------------------------------------------


class _ReLUOpenAtZero(torch.autograd.Function):
    """``max(x, 0)`` whose gradient at exactly 0 is 1 (the subgradient 1 of ReLU at 0; PyTorch's ReLU uses 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x >= 0).to(grad.dtype)


class BottleneckAdapter(nn.Module):
    """``y = x + ReLU(W_up · ReLU(W_down x + b_down) + b_up)`` (HLFT, Zhao et al., MRAC '24, eq. 1).

    Args:
        dim: D, the model's hidden size.
        bottleneck: d̂ (default :data:`ADAPTER_DIM` = 128).

    Input (..., D) float tensor → output (..., D), same dtype. ``up`` (W_up, b_up) is zero at
    initialisation, so the adapter starts as the identity.

    The outer ReLU (kept, as in the paper) meets the zero start at exactly 0, where PyTorch's ReLU
    has gradient 0: W_up would then never receive a gradient and the adapter would stay the
    identity forever. The outer ReLU therefore uses the subgradient 1 at 0 (forward unchanged:
    ``max(u, 0)``); a pre-activation that later becomes negative is clipped as usual.
    """

    def __init__(self, dim: int, bottleneck: int = ADAPTER_DIM) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _ReLUOpenAtZero.apply(self.up(torch.relu(self.down(x))))


class _Adapted(nn.Module):
    """``Adapter(inner(*args))``: a frozen module followed by its adapter (the injection point)."""

    def __init__(self, inner: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.inner(*args, **kwargs))


# ---------------------------------------------------------------------------
# finding the layer stack and the feed-forward output of each layer
# ---------------------------------------------------------------------------


def layer_stack(model: nn.Module) -> nn.ModuleList:
    """The transformer layer list of a ``transformers`` encoder model.

    Speech models (HuBERT, wav2vec 2.0, WavLM, data2vec-audio): ``model.encoder.layers``; BERT-style
    text encoders (BERT, RoBERTa, MiniLM, XLM-R, ELECTRA): ``model.encoder.layer``.

    Raises:
        AdapterError: neither exists (the model class is named).
    """
    enc = getattr(model, "encoder", None)
    for attr in ("layers", "layer"):
        stack = getattr(enc, attr, None)
        if isinstance(stack, nn.ModuleList) and len(stack):
            return stack
    raise AdapterError(f"{type(model).__name__}: no transformer layer list at encoder.layers / encoder.layer; "
                       "HLFT adapters support HuBERT/wav2vec2-style and BERT-style encoders")


def ffn_site(layer: nn.Module) -> tuple[nn.Module, str]:
    """``(parent, attribute)`` of the module whose output is the feed-forward sub-layer's output
    before the residual add and layer norm (see the module docstring).

    Raises:
        AdapterError: an unknown layer layout (the class is named).
    """
    if isinstance(getattr(layer, "feed_forward", None), nn.Module):  # HuBERT / wav2vec2 / WavLM
        return layer, "feed_forward"
    out = getattr(layer, "output", None)
    if out is not None and isinstance(getattr(out, "dense", None), nn.Linear) and hasattr(out, "LayerNorm") \
            and isinstance(getattr(out, "dropout", None), nn.Module):  # BERT / RoBERTa / MiniLM
        return out, "dropout"
    raise AdapterError(f"{type(layer).__name__}: cannot find the feed-forward output to place an adapter after "
                       "(expected .feed_forward or .output.dense/.dropout/.LayerNorm)")


def parse_window(spec: str | tuple[int, int] | list, n_layers: int) -> tuple[int, int]:
    """``"16-21"`` / ``(16, 21)`` / ``"18"`` → ``(first, last)``, 1-based transformer layers, inclusive.

    Raises:
        AdapterError: malformed, descending, or outside ``1..n_layers``.
    """
    if isinstance(spec, str):
        a, _, b = spec.strip().partition("-")
        try:
            first, last = int(a), int(b or a)
        except ValueError:
            raise AdapterError(f"adapter window {spec!r} is not N or A-B") from None
    else:
        first, last = (int(spec[0]), int(spec[-1]))
    if not 1 <= first <= last <= n_layers:
        raise AdapterError(f"adapter window {first}-{last} must satisfy 1 <= first <= last <= {n_layers} "
                           "(layer k is the k-th transformer layer; hidden state k is its output)")
    return first, last


# ---------------------------------------------------------------------------
# The window of adapted layers
# ---------------------------------------------------------------------------


class AdaptedWindow(nn.Module):
    """Transformer layers ``first..last`` of a (frozen) ``transformers`` encoder, each with a
    :class:`BottleneckAdapter` after its feed-forward sub-layer.

    The adapters are injected into the model's own layer modules, so a full forward of ``model``
    (:meth:`full_hidden_states`) runs them too; :meth:`forward` runs only the window from the
    cached hidden state entering layer ``first``. Every encoder parameter gets
    ``requires_grad=False``; only ``self.adapters`` train.

    Args:
        model: a loaded ``transformers`` encoder (``HubertModel``, ``Wav2Vec2Model``, ``BertModel``...).
        first, last: 1-based transformer layers, inclusive (``16, 21``); hidden state ``k`` is the
            output of layer ``k``, the prefix is hidden state ``first - 1``.
        bottleneck: d̂ (128).

    Raises:
        AdapterError: unsupported model, bad window, or a model that already has adapters.
    """

    def __init__(self, model: nn.Module, first: int, last: int, bottleneck: int = ADAPTER_DIM) -> None:
        super().__init__()
        stack = layer_stack(model)
        self.first, self.last = parse_window((first, last), len(stack))
        self.bottleneck = int(bottleneck)
        self.config = model.config
        self.hidden_size = int(model.config.hidden_size)
        self.n_layers = len(stack)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        self._model = [model]  # not a submodule: its weights are not part of this module's state
        self.layers = nn.ModuleList(stack[k - 1] for k in range(self.first, self.last + 1))
        self.adapters = nn.ModuleDict()
        for k, layer in zip(self.layer_keys, self.layers):
            parent, attr = ffn_site(layer)
            inner = getattr(parent, attr)
            if isinstance(inner, _Adapted):
                raise AdapterError(f"layer {k} of {type(model).__name__} already has an adapter")
            ad = BottleneckAdapter(self.hidden_size, self.bottleneck)
            setattr(parent, attr, _Adapted(inner, ad))
            self.adapters[k] = ad
        # the stable-layer-norm speech models apply encoder.layer_norm to the last hidden state only
        self.final_norm = None
        if self.last == self.n_layers and getattr(model.config, "do_stable_layer_norm", False):
            self.final_norm = model.encoder.layer_norm

    @property
    def model(self) -> nn.Module:
        """The wrapped ``transformers`` model (adapters injected)."""
        return self._model[0]

    @property
    def layer_keys(self) -> list[str]:
        """Hidden-state keys the window outputs: ``["16", ..., "21"]``."""
        return [str(k) for k in range(self.first, self.last + 1)]

    @property
    def prefix_layer(self) -> str:
        """Key of the cached input: hidden state ``first - 1``."""
        return str(self.first - 1)

    def train(self, mode: bool = True) -> AdaptedWindow:
        """Only the adapters change mode; the frozen encoder layers always run in eval mode."""
        super().train(mode)
        self.model.eval()
        return self

    def reset_adapters(self, seed: int | None = None) -> None:
        """Re-initialise every adapter (identity start), optionally seeded."""
        if seed is not None:
            torch.manual_seed(seed)
        for ad in self.adapters.values():
            ad.down.reset_parameters()
            nn.init.zeros_(ad.up.weight)
            nn.init.zeros_(ad.up.bias)

    def attention_mask(self, hidden: torch.Tensor, mask: torch.Tensor | None):
        """The mask the layers take, from a (B, T) bool/int padding mask (1 = real frame), built by
        ``transformers.masking_utils.create_bidirectional_mask`` for the model's attention
        implementation, exactly as the full model builds it."""
        if mask is None:
            return None
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask.to(torch.long))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Run layers ``first..last`` from the cached prefix.

        Args:
            hidden: (B, T, D) float32, hidden state ``first - 1`` (zero-padded).
            mask: (B, T) bool, True on real frames/tokens; ``None`` = no padding.

        Returns:
            ``last - first + 1`` tensors (B, T, D): hidden states ``first..last`` (padded positions
            hold unspecified values; pool only over ``mask``).
        """
        if hidden.ndim != 3 or hidden.shape[-1] != self.hidden_size:
            raise AdapterError(f"prefix must be (B, T, {self.hidden_size}), got {tuple(hidden.shape)}")
        if mask is not None:
            # padded frames enter the layers as zeros, as the full speech model sets them
            hidden = hidden * mask[..., None].to(hidden.dtype)
        att = self.attention_mask(hidden, mask)
        outs = []
        h = hidden
        for layer in self.layers:
            o = layer(h, attention_mask=att)
            h = o[0] if isinstance(o, (tuple, list)) else o
            outs.append(h)
        if self.final_norm is not None:
            outs[-1] = self.final_norm(outs[-1])
        return outs

    # -- the full path (no cache) -------------------------------------------------------
    def prefix(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden state ``first - 1`` from the model's raw inputs (``input_values`` [+ ``attention_mask``]
        for speech, tokenizer outputs for text), computed without gradients by running the model up
        to the input of layer ``first`` and stopping there. Returns (B, T, D) float32."""
        return compute_prefix(self.model, inputs, self.first)

    def full_hidden_states(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Hidden states ``first..last`` of one full forward of the adapted model (gradients flow to the
        adapters; layers before the window run under ``no_grad``, they are frozen). For tests and
        for timing the uncached path."""
        mask = frame_mask(self.model, inputs)
        return self.forward(self.prefix(inputs), mask)


class _StopForward(Exception):
    pass


def compute_prefix(model: nn.Module, inputs: dict[str, torch.Tensor], first: int) -> torch.Tensor:
    """The input of transformer layer ``first`` (hidden state ``first - 1``), (B, T, D) float32,
    from one forward of ``model`` that stops there (no gradients, eval mode).

    Raises:
        AdapterError: ``first`` outside the layer stack, or the model never reached the layer.
    """
    stack = layer_stack(model)
    if not 1 <= first <= len(stack):
        raise AdapterError(f"layer {first} outside 1..{len(stack)}")
    got: list[torch.Tensor] = []

    def pre(_module, args, kwargs):
        got.append(args[0] if args else kwargs["hidden_states"])
        raise _StopForward

    handle = stack[first - 1].register_forward_pre_hook(pre, with_kwargs=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(**inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
        model.train(was_training)
    if not got:
        raise AdapterError(f"{type(model).__name__} never reached layer {first}")
    return got[0].float()


def frame_mask(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """(B, T) bool padding mask of the model's frames/tokens: text models take the tokenizer's
    ``attention_mask``; speech models turn the sample mask into a frame mask with the CNN
    output-length formula (``None`` when no mask was given)."""
    m = inputs.get("attention_mask")
    if m is None:
        return None
    if "input_values" not in inputs:
        return m.bool()
    lengths = m.sum(-1)
    n = int(inputs["input_values"].shape[-1])  # the padded length gives the model's frame count
    for k, s in zip(model.config.conv_kernel, model.config.conv_stride):
        lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        n = (n - k) // s + 1
    return torch.arange(n, device=m.device)[None, :] < lengths[:, None]


def pad_sequences(seqs: list, dtype=torch.float32, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad a list of (T_i, D) arrays/tensors into ``(x (B, T_max, D), mask (B, T_max) bool)``.

    Raises:
        AdapterError: an empty sequence or mismatched dimensions (the index is named).
    """
    if not seqs:
        raise AdapterError("no sequences to pad")
    d = seqs[0].shape[-1]
    for i, s in enumerate(seqs):
        if s.ndim != 2 or s.shape[-1] != d or s.shape[0] == 0:
            raise AdapterError(f"sequence {i} has shape {tuple(s.shape)}; expected (T > 0, {d})")
    t = max(int(s.shape[0]) for s in seqs)
    x = torch.zeros(len(seqs), t, d, dtype=dtype, device=device)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool, device=device)
    for i, s in enumerate(seqs):
        x[i, : s.shape[0]] = torch.as_tensor(s, dtype=dtype, device=device)
        mask[i, : s.shape[0]] = True
    return x, mask


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the real frames: (B, T, D), (B, T) bool → (B, D) (emo's utterance pooling)."""
    if mask is None:
        return h.mean(1)
    m = mask[..., None].to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


# ---------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------


def load_encoder_model(source: str, attention: str = "sdpa") -> nn.Module:
    """``AutoModel.from_pretrained(source)`` in float32, eval mode, every weight frozen (eager attention
    when the class has no SDPA kernel). ``trust_remote_code`` is never set here.

    Raises:
        AdapterError: the source cannot be loaded (named).
    """
    from transformers import AutoModel

    try:
        try:
            model = AutoModel.from_pretrained(source, attn_implementation=attention, dtype=torch.float32)
        except (ValueError, ImportError):
            model = AutoModel.from_pretrained(source, attn_implementation="eager", dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - re-raised with the source named
        raise AdapterError(f"cannot load encoder weights from {source!r} ({type(e).__name__}: {e})") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (:func:`emo.fsio.atomic_path`); refuses to write through a symlink.

    Raises:
        AdapterError: ``path`` is a symbolic link.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.is_symlink():
        raise AdapterError(f"refusing to write {path}: it is a symbolic link")
    path.parent.mkdir(parents=True, exist_ok=True)
    with fsio.atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def save_adapters(window: AdaptedWindow, path: str | os.PathLike, extra_tensors: dict[str, torch.Tensor] | None = None,
                  info: dict[str, Any] | None = None) -> str:
    """Save the window's adapters (``adapters.<layer>.down.weight`` ...) plus optional extra tensors
    (e.g. the HLFT head, under their own prefix) to a safetensors file; settings go to the metadata
    (``format``, ``first``, ``last``, ``bottleneck``, ``hidden_size``, ``model_type`` and ``info`` as JSON).

    Returns:
        The file's SHA-256 (hex).
    """
    tensors = {f"adapters.{k}": v for k, v in window.adapters.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        if k.startswith("adapters."):
            raise AdapterError(f"extra tensor name {k!r} clashes with the adapters")
        tensors[k] = v
    meta = {"format": ADAPTER_FORMAT, "first": str(window.first), "last": str(window.last),
            "bottleneck": str(window.bottleneck), "hidden_size": str(window.hidden_size),
            "model_type": str(getattr(window.config, "model_type", "")), "info": json.dumps(info or {}, sort_keys=True)}
    atomic_save_safetensors(tensors, path, meta)
    return sha256_file(path)


def read_adapter_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and parsed metadata of a file written by :func:`save_adapters`.

    Raises:
        AdapterError: missing file, not safetensors, or not an emo adapter file (named).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"adapter file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise AdapterError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if meta.get("format") != ADAPTER_FORMAT:
        raise AdapterError(f"{path}: not an emo HLFT adapter file (format {meta.get('format')!r})")
    parsed: dict[str, Any] = {k: int(meta[k]) for k in ("first", "last", "bottleneck", "hidden_size")}
    parsed["model_type"] = meta.get("model_type", "")
    parsed["info"] = json.loads(meta.get("info") or "{}")
    return tensors, parsed


def load_adapters(window: AdaptedWindow, path: str | os.PathLike) -> dict[str, Any]:
    """Load an adapter set into ``window`` (strict: same window, bottleneck and hidden size).

    Returns:
        The file's metadata (see :func:`read_adapter_file`) plus ``sha256``.

    Raises:
        AdapterError: the file's window/sizes differ from ``window`` (each difference named).
    """
    tensors, meta = read_adapter_file(path)
    diffs = [f"{k}: file has {meta[k]}, model has {getattr(window, k)}" for k in ("first", "last", "bottleneck", "hidden_size")
             if meta[k] != getattr(window, k)]
    if diffs:
        raise AdapterError(f"{path}: adapter set does not fit this encoder window ({'; '.join(diffs)})")
    state = {k[len("adapters."):]: v for k, v in tensors.items() if k.startswith("adapters.")}
    try:
        window.adapters.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise AdapterError(f"{path}: {e}") from None
    return {**meta, "sha256": sha256_file(path)}


# ---------------------------------------------------------------------------
# Extraction with a tuned adapter set (``emo extract --adapters RUN``)
# ---------------------------------------------------------------------------


def adapt_encoder(encoder: Any, adapter_file: str | os.PathLike, fold: int | None = None,
                  held_out: list[str] | None = None, suffix: str = "+hlft") -> dict[str, Any]:
    """Inject a saved adapter set into a built transformers encoder of emo (``SpeechEncoder``,
    ``TextEncoder``: anything with a ``model`` attribute holding the ``transformers`` model), so that
    its ordinary :meth:`encode` yields HLFT features; rename it (``hubert_large+hlft`` or, per fold,
    ``hubert_large+hlft.fold3``: its own store) and extend its provenance with the adapter file, its
    SHA-256, the window, the fold and the number of held-out samples.

    Args:
        encoder: a built encoder; its layers must reach the window's last layer.
        adapter_file: ``fold-K.safetensors`` of an ``emo tune hlft`` run.
        fold: the fold index (names the store ``<name><suffix>.fold<K>``); ``None``: ``<name><suffix>``.
        held_out: names of the samples fold K's adapters never saw (recorded as a SHA-256 of the
            sorted names, with their count, so ``fuse train`` can check its evaluation fold).

    Returns:
        The provenance entries added.

    Raises:
        AdapterError: the encoder has no transformers model, or the adapter set does not fit it.
    """
    model = getattr(encoder, "model", None)
    if not isinstance(model, nn.Module):
        raise AdapterError(f"{encoder.name}: not a transformers encoder; HLFT adapters need one")
    window = AdaptedWindow(model, *_window_of(adapter_file))
    meta = load_adapters(window, adapter_file)
    extra: dict[str, Any] = {
        "hlft_adapters": str(Path(adapter_file).resolve()), "hlft_adapters_sha256": meta["sha256"],
        "hlft_window": f"{window.first}-{window.last}", "hlft_adapter_dim": window.bottleneck,
        "hlft_base_encoder": encoder.name,
    }
    if fold is not None:
        extra["hlft_fold"] = int(fold)
    if held_out is not None:
        extra["hlft_held_out_n"] = len(held_out)
        extra["hlft_held_out_sha256"] = names_digest(held_out)
    encoder.name = f"{encoder.name}{suffix}" + (f".fold{fold}" if fold is not None else "")
    encoder.hlft_window = window
    base = encoder.provenance

    def provenance() -> dict[str, Any]:
        p = base()
        p.update(extra)
        p["encoder"] = encoder.name
        # the adapters change the weights: identity of this store = base weights + adapter file
        p["weights_hash"] = hashlib.sha256(f"{p.get('weights_hash', '')}|{meta['sha256']}".encode()).hexdigest()[:16]
        return p

    encoder.provenance = provenance
    return extra


def _window_of(adapter_file: str | os.PathLike) -> tuple[int, int]:
    _, meta = read_adapter_file(adapter_file)
    return meta["first"], meta["last"]


def names_digest(names: list[str]) -> str:
    """SHA-256 (hex) of the sorted sample names joined by newlines: identifies a set of samples."""
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8")).hexdigest()


def hlft_run_encoders(spec: Any, run_dir: str | os.PathLike, device: str = "cpu", frames: bool = False,
                      **options: Any) -> list[Any]:
    """One adapted encoder per fold of an ``emo tune hlft`` run (``emo extract --encoder S --adapters RUN``).

    Each is ``spec`` built as usual, with fold K's adapters injected (:func:`adapt_encoder`), named
    ``<name>+hlft.fold<K>`` (its own store). Text encoders get the run's ``special_tokens`` setting
    (the pooling the adapters were trained with).

    Args:
        spec: an :class:`emo.extract.registry.EncoderSpec` (``hubert_large:16-21``).
        run_dir: the run directory (``config.json`` + ``fold-K.safetensors``).

    Raises:
        AdapterError: no/invalid run, an adapter file whose SHA-256 differs from the run's record,
            or an encoder whose weights differ from the run's.
    """
    run = Path(run_dir)
    try:
        cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AdapterError(f"{run}: not an `emo tune hlft` run directory ({e})") from None
    if cfg.get("kind") != "hlft":
        raise AdapterError(f"{run}/config.json is not an `emo tune hlft` run (kind {cfg.get('kind')!r})")
    enc_cfg = cfg.get("encoder") or {}
    if enc_cfg.get("name") and enc_cfg["name"] != spec.name:
        raise AdapterError(f"{run} tuned encoder {enc_cfg['name']!r}, not {spec.name!r}")
    opts = dict(options)
    if enc_cfg.get("modality") == "text" and "special_tokens" in enc_cfg:
        opts["special_tokens"] = bool(enc_cfg["special_tokens"])
    out = []
    for k, fold in enumerate(cfg.get("folds") or []):
        path = run / fold["adapter_file"]
        sha = sha256_file(path) if path.is_file() else None
        if sha != fold.get("sha256"):
            raise AdapterError(f"{path}: {'missing' if sha is None else 'SHA-256 differs from the run record'}")
        enc = spec.build(device=device, frames=frames, **opts)
        want = enc_cfg.get("weights_hash")
        if want and enc.weights_hash() and enc.weights_hash() != want:
            raise AdapterError(f"{spec}: weights hash {enc.weights_hash()} differs from the tuned encoder's {want} ({run})")
        adapt_encoder(enc, path, fold=k, held_out=fold.get("test_names"))
        out.append(enc)
    if not out:
        raise AdapterError(f"{run}/config.json lists no folds")
    return out
