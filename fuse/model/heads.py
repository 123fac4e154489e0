"""Fusion heads: turn a list of feature vectors ("tokens") into one fused utterance state ``z``.

Every head takes ``tokens``: a list of float32 tensors of shape (B, D_t), one per feature
(each selected layer of a multi-layer encoder is its own token unless layer weights pool
them), with a parallel list of :class:`Token` descriptions, and returns ``(z, info)``:
``z`` (B, out_dim) float32 and ``info`` a dict of attention weights for inspection.

Heads and sources:

* :class:`AFG` / :class:`AFGHead`: attention-guided feature gathering, eq. 1–3 and the three
  structures of Fig. 1 of Wang et al., "Hierarchical Audio-Visual Information Fusion with
  Multi-label Joint Decoding for MER 2023" (ACM MM 2023, arXiv:2309.07925).
* :class:`AttentionFusion`: the attention fusion of Zhao, Chen, Li, Jiang, Xie, "Improving
  Multimodal Emotion Recognition by Leveraging Acoustic Adaptation and Visual Alignment"
  (MRAC '24; the MER 2024-SEMI paper).
* :class:`LayerWeights`: learnable layer weighting, same MRAC '24 paper.
* :class:`TransformerFusion`: a 2-layer transformer encoder over modality tokens, after Lin, Li,
  Li, Li, "Multi-modal Fusion for Emotion and Intention Joint Understanding" (the ICASSP 2025
  MEIJU challenge).
* :class:`MLPHead` and :class:`LinearProbe`: baselines.

Frame-level inputs (``emo fuse train --frames``) reach the heads as tokens too: a
:class:`emo.fuse.model.frames.FrameLSTM` (built by :class:`emo.fuse.model.multimodal.FusionModel`) turns each padded
:class:`emo.fuse.model.frames.PackedFrames` batch into one (B, H) vector per encoder (or per layer), so
every head works on them unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


#: Set (through :func:`uniform_dropout_masks`) while the fold-parallel trainer runs: :class:`Dropout`
#: then draws its masks from ``torch.rand_like`` (see there); otherwise it is ``nn.Dropout``.
_UNIFORM_MASKS: contextvars.ContextVar[bool] = contextvars.ContextVar("emo_uniform_dropout_masks", default=False)


@contextlib.contextmanager
def uniform_dropout_masks():
    """Within the block, every :class:`Dropout` draws its mask as ``torch.rand_like(x) >= p``."""
    token = _UNIFORM_MASKS.set(True)
    try:
        yield
    finally:
        _UNIFORM_MASKS.reset(token)


class Dropout(nn.Dropout):
    """Inverted dropout (Srivastava et al. 2014): in training each element is kept with probability
    ``1 - p`` and scaled by ``1 / (1 - p)``; identity in eval mode.

    Outside :func:`uniform_dropout_masks` this is exactly ``nn.Dropout`` (same random stream, so the
    sequential trainer's results do not change). Inside it (the fold-parallel trainer,
    :mod:`emo.fuse.training.batched`), the mask is drawn as ``torch.rand_like(x) >= p`` instead of
    ``bernoulli_``, which on CPU is about 4x slower at the sizes a stacked step draws (120 models x
    32 rows x 256 units: 13.9 ms vs 3.3 ms per mask on the 2-core reference machine) while being
    slightly faster than three ops at a single model's size. Same distribution, a different random
    stream. The scaled mask (``rand_like(x) >= p``, times ``1 / (1 - p)``) multiplies ``x`` (as
    ``nn.Dropout``: a non-finite input stays non-finite), so the backward pass is one product;
    ``torch.where`` cost twice the time forward and backward under ``vmap`` (5 models x 256 rows
    x 256 units: +4.4 ms against +1.4 ms per dropout layer and step, measured on the reference
    machine). Works under ``torch.vmap(..., randomness="different")``. No parameters: checkpoints
    are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _UNIFORM_MASKS.get() or not self.training or self.p == 0.0 or self.p >= 1.0:
            return super().forward(x)
        # (not rand_like(x).ge_(p): in-place ge_ has no vmap batching rule and runs model by model)
        return x * (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))


@dataclass(frozen=True)
class Token:
    """Description of one head input: the encoder it comes from, its modality
    (``audio``, ``face``, ``text``), its layer key (``"18"``, ``"functionals"``, or ``"weighted"``
    after :class:`LayerWeights`) and its dimension D."""

    encoder: str
    modality: str
    layer: str
    dim: int


#: Fusion heads by name: ``name -> build(tokens, hidden=, dropout=, structure=, afg_scores=) -> nn.Module``
#: (the module has ``out_dim`` and ``forward(xs: list of (B, D_t)) -> (z (B, out_dim), info dict)``).
#: Filled by :func:`register_head` where each head is defined; ``--head`` takes any key.
HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_head(name: str, build: Callable[..., nn.Module] | None = None) -> Callable:
    """Class decorator (timm's ``@register_model`` habit): register a fusion head as ``name``.

    Adding a head is one file: define an ``nn.Module`` taking ``(tokens, hidden, dropout)`` with
    ``out_dim`` and ``forward(xs) -> (z, info)``, decorate it, and import the module (a plug-in:
    ``emo --plugin MODULE`` or ``EMO_PLUGINS=MODULE``; see ``docs/cli.md``). The batched trainer,
    the CLI's ``--head`` and its choices need no edit.

    Args:
        name: the ``--head`` value (must be new).
        build: ``build(tokens, hidden=, dropout=, structure=, afg_scores=)``; default
            ``cls(tokens, hidden, dropout)``.

    Raises:
        ValueError: ``name`` already registered.
    """
    def deco(cls):
        if name in HEADS:
            raise ValueError(f"fusion head {name!r} is already registered ({HEADS[name]})")
        HEADS[name] = build or (lambda tokens, hidden, dropout, **_: cls(tokens, hidden, dropout))
        return cls
    return deco


class LayerWeights(nn.Module):
    """Learnable weighted sum over the layers of one encoder: ``f = Σ_i w_i f_i``
    (Zhao et al., MRAC '24, the MER 2024-SEMI paper). The weights are free (no softmax), initialised to
    1.0 on ``init_layer`` (layer 18 in the paper) and 0 elsewhere; when ``init_layer`` is not
    among ``layers``, to ``1/L`` everywhere.

    Input (..., L, D) float32 (e.g. (B, L, D), or (B, T, L, D) for frame sequences) → output (..., D).
    """

    def __init__(self, layers: list[str], init_layer: str = "18") -> None:
        super().__init__()
        w = torch.zeros(len(layers))
        if init_layer in layers:
            w[layers.index(init_layer)] = 1.0
        else:
            w[:] = 1.0 / len(layers)
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...ld,l->...d", x, self.weight)


#: How :class:`AFG` scores its inputs: ``concat`` (eq. 2 of Wang et al.: one linear map of the
#: concatenation of all N projected inputs to N scores; the default) or ``per-input`` (each input
#: scored on its own by ``v^T tanh(W h_i + b)``, additive attention; emo's form before 2026-11).
AFG_SCORES = ("concat", "per-input")


class AFG(nn.Module):
    """Attention-guided feature gathering (Wang et al., "Hierarchical Audio-Visual Information
    Fusion with Multi-label Joint Decoding for MER 2023", ACM MM 2023, eq. 1–3).

    eq. 1: project each input to a common dimension, ``h^i = ReLU(W_i x^i + b_i)`` (H);
    eq. 2 (``scores="concat"``, the paper's form and the default): attention scores from the
    concatenation of all N projected features, ``α = softmax(W_α [h^1; …; h^N] + b_α)`` ∈ R^N
    (``W_α``: N x NH), as in the MER baseline's attention module; with ``scores="per-input"``
    each input is scored separately, ``α_i = softmax_i(v^T tanh(W_a h^i + b_a))`` (additive
    attention; not in the paper, kept as a named option);
    eq. 3: weighted sum, ``z = Σ_i α_i h^i``.

    With one input, α ≡ 1 and z = h¹: the scores are not computed (same outputs; ``W_α`` gets no
    gradient instead of an exact zero one, so AdamW leaves it as initialised).

    Args:
        dims: input dimensions D_i, one per input vector.
        hidden: H, the common dimension.
        dropout: applied to each ``h^i``.
        scores: ``concat`` or ``per-input`` (:data:`AFG_SCORES`).

    forward(xs: list of (B, D_i)) → (z (B, H), α (B, N)).

    Raises:
        ValueError: no inputs, unknown ``scores``.
    """

    def __init__(self, dims: list[int], hidden: int, dropout: float = 0.0, scores: str = "concat") -> None:
        super().__init__()
        if not dims:
            raise ValueError("AFG needs at least one input")
        if scores not in AFG_SCORES:
            raise ValueError(f"unknown AFG scores {scores!r}; use one of {', '.join(AFG_SCORES)}")
        self.scores = scores
        self.proj = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        if scores == "concat":
            self.att = nn.Linear(len(dims) * hidden, len(dims))  # W_α, b_α of eq. 2
        else:
            self.att = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, 1, bias=False)
        self.drop = Dropout(dropout)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hs = [self.drop(torch.relu(p(x))) for p, x in zip(self.proj, xs)]  # N x (B, H) eq. 1
        if len(hs) == 1:
            # one input: eq. 2's softmax over a single score is exactly 1 and its Jacobian exactly 0,
            # so eq. 3 is z = h¹ for either form of the scores. Skipping them gives the same outputs
            # and gradients (W_α's gradient was an exact 0, now none). A single-store run (EmoDB's
            # eGeMAPS default) spent about a fifth of its op time in a torch profile on the score
            # product and the α h products; its training took a tenth less (interleaved runs)
            return hs[0], torch.ones_like(hs[0][..., :1])
        if self.scores == "concat":
            # eq. 2 as a sum over blocks: W_α [h^1; ...; h^N] = Σ_i W_α[:, iH:(i+1)H] h^i, and eq. 3 as
            # Σ_i α_i h^i, neither stacking nor concatenating h: the same products, and a third less
            # time forward and backward under vmap (5 models x 256 rows x 8 inputs of 256: 18.6 ms
            # against 29.3 ms per step for stack + flatten + einsum, measured on the reference machine)
            H = hs[0].shape[-1]
            w = self.att.weight
            s = sum((nn.functional.linear(h, w[:, i * H:(i + 1) * H]) for i, h in enumerate(hs)), self.att.bias)
            alpha = torch.softmax(s, dim=-1)  # (B, N) eq. 2
            terms = [alpha[..., i:i + 1] * h for i, h in enumerate(hs)]
            return sum(terms[1:], terms[0]), alpha  # eq. 3 (started from the first term, not from 0)
        h = torch.stack(hs, dim=1)  # (B, N, H)
        alpha = torch.softmax(self.v(torch.tanh(self.att(h))).squeeze(-1), dim=1)
        return torch.einsum("bn,bnh->bh", alpha, h), alpha  # eq. 3


@register_head("afg", lambda tokens, hidden, dropout, structure=1, afg_scores="concat", **_:
               AFGHead(tokens, hidden, dropout, structure, afg_scores))
class AFGHead(nn.Module):
    """The three AFG fusion structures of Wang et al., MER 2023, Fig. 1.

    * ``structure=1``: one parallel AFG over every acoustic and visual token.
    * ``structure=2``: each acoustic token is fused with all visual (non-audio) tokens by its own
      AFG; the audio-visual results are fused by a second AFG. Needs audio and non-audio tokens.
    * ``structure=3``: intra-modal AFG over the tokens of each encoder (e.g. the HuBERT layers),
      then an inter-modal AFG over the per-encoder results (an encoder with one token is passed
      through the inter-modal AFG's projection).

    Output dimension: ``hidden``. ``info["attention"]``: the last (outer) AFG's weights (B, N).

    Raises:
        ValueError: structure 2 without both audio and non-audio tokens; unknown structure.
    """

    def __init__(self, tokens: list[Token], hidden: int = 256, dropout: float = 0.3, structure: int = 1,
                 scores: str = "concat") -> None:
        super().__init__()
        self.structure = int(structure)
        self.out_dim = hidden
        dims = [t.dim for t in tokens]
        if self.structure == 1:
            self.outer = AFG(dims, hidden, dropout, scores)
        elif self.structure == 2:
            self.audio = [i for i, t in enumerate(tokens) if t.modality == "audio"]
            self.visual = [i for i, t in enumerate(tokens) if t.modality != "audio"]
            if not self.audio or not self.visual:
                raise ValueError("AFG structure 2 fuses each acoustic feature with the visual features: "
                                 f"needs both audio and face/text features, got modalities {sorted({t.modality for t in tokens})}")
            self.inner = nn.ModuleList(AFG([dims[a]] + [dims[v] for v in self.visual], hidden, dropout, scores) for a in self.audio)
            self.outer = AFG([hidden] * len(self.audio), hidden, dropout, scores)
        elif self.structure == 3:
            groups: dict[str, list[int]] = {}
            for i, t in enumerate(tokens):
                groups.setdefault(t.encoder, []).append(i)
            self.groups = list(groups.values())
            self.inner = nn.ModuleList(AFG([dims[i] for i in g], hidden, dropout, scores) if len(g) > 1 else nn.Identity() for g in self.groups)
            self.outer = AFG([hidden if len(g) > 1 else dims[g[0]] for g in self.groups], hidden, dropout, scores)
        else:
            raise ValueError(f"unknown AFG structure {structure!r}; use 1, 2 or 3")

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        if self.structure == 1:
            z, a = self.outer(xs)
        elif self.structure == 2:
            vis = [xs[v] for v in self.visual]
            av = [m([xs[a]] + vis)[0] for m, a in zip(self.inner, self.audio)]
            z, a = self.outer(av)
        else:
            parts = [m([xs[i] for i in g])[0] if len(g) > 1 else xs[g[0]] for m, g in zip(self.inner, self.groups)]
            z, a = self.outer(parts)
        return z, {"attention": a}


@register_head("attention")
class AttentionFusion(nn.Module):
    """Attention fusion of Zhao, Chen, Li, Jiang, Xie, "Improving Multimodal Emotion Recognition by
    Leveraging Acoustic Adaptation and Visual Alignment" (MRAC '24): a per-input MLP maps each token to a common dimension (256),
    the results are stacked into ``h`` (B, M, H), attention weights over inputs are
    ``α = softmax(h W_α + b_α)`` ((B, M, 1)) and the fused state is ``z = h^T α`` ((B, H)).
    (Equation numbers are not given here: the ones emo quoted before did not match the paper and
    could not be re-checked offline.)
    """

    def __init__(self, tokens: list[Token], hidden: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        self.out_dim = hidden
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(t.dim, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU())
            for t in tokens
        )
        self.score = nn.Linear(hidden, 1)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        h = torch.stack([m(x) for m, x in zip(self.mlps, xs)], dim=1)
        alpha = torch.softmax(self.score(h), dim=1)  # α = softmax(h W_α + b_α)
        z = (h * alpha).sum(dim=1)  # z = h^T α
        return z, {"attention": alpha.squeeze(-1)}


def cls_token_encoder(n_tokens: int, hidden: int, n_heads: int, n_layers: int, dropout: float
                      ) -> tuple[nn.Parameter, nn.Parameter, nn.TransformerEncoder, nn.LayerNorm]:
    """The [CLS]-token transformer shared by :class:`TransformerFusion` and the frame-token fusion of
    :mod:`emo.fuse.model.sequence`: token-type embeddings (n_tokens + 1, hidden) and a [CLS] token
    (1, 1, hidden), both N(0, 0.02²); a pre-norm ``nn.TransformerEncoder`` of ``n_layers`` layers
    (feed-forward 2·hidden) with ``n_heads`` reduced to the largest divisor of ``hidden`` not above
    it; the final LayerNorm. Returns ``(type_emb, cls, encoder, norm)``, created in this order (the
    order of the random draws)."""
    n_heads = max(h for h in range(1, n_heads + 1) if hidden % h == 0)
    type_emb = nn.Parameter(torch.zeros(n_tokens + 1, hidden))
    cls = nn.Parameter(torch.zeros(1, 1, hidden))
    nn.init.normal_(type_emb, std=0.02)
    nn.init.normal_(cls, std=0.02)
    layer = nn.TransformerEncoderLayer(hidden, n_heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
    return type_emb, cls, nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False), nn.LayerNorm(hidden)


@register_head("transformer")
class TransformerFusion(nn.Module):
    """Transformer fusion over modality tokens (after Lin, Li, Li, Li, "Multi-modal Fusion for
    Emotion and Intention Joint Understanding", ICASSP 2025 MEIJU challenge): each token is
    projected to H and tagged with a learned token embedding, a learned [CLS] token is prepended,
    a 2-layer ``nn.TransformerEncoder`` (4 heads, pre-norm) mixes them, and ``z`` is the [CLS] output.

    Frame-level inputs arrive already encoded by their :class:`emo.fuse.model.frames.FrameLSTM` (one (B, H) token each).
    ``n_heads`` is reduced to the largest divisor of ``hidden`` not above it.

    forward(xs: list of (B, D_t)) → (z (B, hidden), {}).
    """

    def __init__(self, tokens: list[Token], hidden: int = 256, dropout: float = 0.3, n_layers: int = 2,
                 n_heads: int = 4) -> None:
        super().__init__()
        self.out_dim = hidden
        self.proj = nn.ModuleList(nn.Linear(t.dim, hidden) for t in tokens)
        self.type_emb, self.cls, self.encoder, self.norm = cls_token_encoder(len(tokens), hidden, n_heads, n_layers, dropout)

    def forward(self, xs: list) -> tuple[torch.Tensor, dict]:
        h = torch.stack([p(x) for p, x in zip(self.proj, xs)], dim=1)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.type_emb
        return self.norm(self.encoder(h)[:, 0]), {}


@register_head("mlp")
class MLPHead(nn.Module):
    """Baseline: concatenate all tokens, two ``Linear → ReLU → Dropout`` layers of width H."""

    def __init__(self, tokens: list[Token], hidden: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        self.out_dim = hidden
        d = sum(t.dim for t in tokens)
        self.net = nn.Sequential(Dropout(min(dropout, 0.2)), nn.Linear(d, hidden), nn.ReLU(), Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), Dropout(dropout))

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return self.net(torch.cat(xs, dim=1)), {}


@register_head("linear", lambda tokens, **_: LinearProbe(tokens))
class LinearProbe(nn.Module):
    """Baseline for layer sweeps: ``z`` is the concatenated tokens, so the decoder on top is a
    linear (multinomial logistic / least-squares) model of the features."""

    def __init__(self, tokens: list[Token], hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.out_dim = sum(t.dim for t in tokens)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return torch.cat(xs, dim=1), {}


@register_head("univa")
class UniVAHead(nn.Module):
    """Per-modality encoders, fusion, and projection heads for UniVA (the model whose loss is eq. 11).

    Tokens (:class:`emo.fuse.model.heads.Token`) are grouped by modality. Each modality m's tokens
    are concatenated and encoded, ``h_m = Dropout(ReLU(W_m [x_t]_{t∈m} + b_m))`` (H); the fused
    state is ``z = Dropout(ReLU(W_f [h_m]_m + b_f))`` (H). A projection head per modality,
    ``g_m(h) = W_2 ReLU(W_1 h)`` (``proj_dim``), gives the embeddings of the contrastive loss
    (discarded at prediction, as in SupCon). The paper's unimodal encoders are transformers over
    frame sequences; on emo's pooled features a one-layer MLP per modality is emo's choice.

    forward(xs: list of (B, D_t)) → (z (B, H), info): ``info["modality"]`` = {modality: h_m (B, H)}.
    """

    def __init__(self, tokens: list, hidden: int = 256, dropout: float = 0.3, proj_dim: int = 128) -> None:
        super().__init__()
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(tokens):
            groups.setdefault(t.modality, []).append(i)
        self.modalities = list(groups)
        self.groups = [groups[m] for m in self.modalities]
        self.encoders = nn.ModuleList(nn.Linear(sum(tokens[i].dim for i in g), hidden) for g in self.groups)
        self.fuse = nn.Linear(hidden * len(self.groups), hidden)
        self.drop = Dropout(dropout)
        self.proj = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, proj_dim))
                                  for _ in self.groups)
        self.out_dim = hidden

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        hs = [self.drop(torch.relu(enc(torch.cat([xs[i] for i in g], dim=1)))) for enc, g in zip(self.encoders, self.groups)]
        z = self.drop(torch.relu(self.fuse(torch.cat(hs, dim=1))))
        return z, {"modality": dict(zip(self.modalities, hs))}

    def views(self, h: dict[str, torch.Tensor], n_views: int = 2) -> dict[str, torch.Tensor]:
        """Per modality, ``n_views`` projections (V, B, proj_dim) of h_m, each through its own dropout
        mask (in training mode), the duplicated views of eq. 4."""
        out = {}
        for m, proj in zip(self.modalities, self.proj):
            out[m] = torch.stack([proj(self.drop(h[m])) for _ in range(n_views)])
        return out


def build_head(name: str, tokens: list[Token], hidden: int, dropout: float, structure: int = 1,
               afg_scores: str = "concat") -> nn.Module:
    """Construct the head registered as ``name`` (:data:`HEADS`; ``structure`` and ``afg_scores``:
    :data:`AFG_SCORES`, AFG only; other heads ignore them). Raises ValueError for unknown names."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; use one of {', '.join(HEADS)}")
    return HEADS[name](tokens, hidden=hidden, dropout=dropout, structure=structure, afg_scores=afg_scores)
