"""Private APIs of third-party libraries, in one place, each with a version check and a public fallback.

emo calls five private (underscore or undecorated) APIs because the public ones are slower or do not expose what
is needed. Each is wrapped here; no other module may name them (``tests/test_architecture.py``
fails on ``._fused_adamw_``, ``._params``, ``.__wrapped__``, ``._embeds``, ``._pool``, ``._options`` or ``._smile``
outside this file). Every wrapper uses the private API only when the installed version of the
library lies in the range it was tested with (:data:`TESTED`: from the floor in ``pyproject.toml``
up to, not including, the next major version) and the attribute exists; otherwise it runs a
fallback written with public attributes only, which computes the same thing (``tests/test_compat.py``
compares both paths).

========================================  ==========================  ===========================================
private API                               used by                     public fallback
========================================  ==========================  ===========================================
``torch._fused_adamw_``                   batched AdamW (fuse)        the AdamW update (Loshchilov & Hutter 2019,
                                                                      Algorithm 2, as ``torch.optim.AdamW``) in
                                                                      plain tensor operations, tensor by tensor
``torch.optim.LBFGS._params``             batched L-BFGS probes       ``opt.param_groups[0]["params"]``
``Optimizer.add_param_group.__wrapped__`` full-batch L-BFGS (fuse)    ``torch.optim.LBFGS`` itself (imports
``Optimizer.zero_grad.__wrapped__``                                   ``torch._dynamo``: +1.6 s, +151 MB)
``open_clip VisionTransformer._embeds``   CLIP layer-wise features    conv1 -> class token -> positional
                                                                      embedding -> patch dropout -> ``ln_pre``
``open_clip VisionTransformer._pool``     CLIP ``proj`` features      ``ln_post`` then the class token
                                                                      (``pool_type="tok"``, no attention pool)
``opensmile.Smile._options/_smile``       streaming eGeMAPS           the same options and an
                                                                      ``opensmile.core.lib.OpenSMILE``
                                                                      initialised from public attributes
========================================  ==========================  ===========================================
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from typing import Any

#: distribution -> (lowest tested version, first untested major version). The floor equals
#: ``pyproject.toml``'s; the private path is used only inside this range.
TESTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "torch": ((2, 14), (3,)),
    "open_clip_torch": ((3, 3), (4,)),
    "opensmile": ((2, 6), (3,)),
}

#: Set to ``True`` (tests) to force every public fallback.
FORCE_FALLBACK = False


def _version(dist: str) -> tuple[int, ...] | None:
    try:
        v = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])


def private_ok(dist: str) -> bool:
    """True when ``dist``'s installed version is in :data:`TESTED`'s range (and fallbacks are not forced)."""
    if FORCE_FALLBACK:
        return False
    v = _version(dist)
    if v is None:
        return False
    lo, hi = TESTED[dist]
    return lo <= v < hi


# -- torch ------------------------------------------------------------------------------------------
def fused_adamw_(params: list, grads: list, exp_avgs: list, exp_avg_sqs: list, max_exp_avg_sqs: list,
                 state_steps: list, *, lr: float, beta1: float, beta2: float, weight_decay: float, eps: float,
                 amsgrad: bool = False, maximize: bool = False, grad_scale: Any = None, found_inf: Any = None) -> None:
    """One AdamW step in place over lists of tensors (``torch._fused_adamw_``'s signature).

    ``state_steps`` are float tensors already incremented for this step (as ``torch.optim.AdamW``
    does before the kernel). Update (Loshchilov & Hutter, ICLR 2019, Algorithm 2, with PyTorch's
    bias correction): ``p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)``.

    Raises:
        NotImplementedError: ``amsgrad``, ``maximize``, ``grad_scale`` or ``found_inf`` on the
            fallback path (emo never passes them).
    """
    import torch

    if private_ok("torch") and hasattr(torch, "_fused_adamw_"):
        torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr, beta1=beta1,
                            beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=amsgrad, maximize=maximize,
                            grad_scale=grad_scale, found_inf=found_inf)
        return
    if amsgrad or maximize or grad_scale is not None or found_inf is not None:
        raise NotImplementedError("emo.compat.fused_adamw_ fallback: amsgrad/maximize/grad_scale/found_inf unsupported")
    with torch.no_grad():
        for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, state_steps):
            p.mul_(1 - lr * weight_decay)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            t = torch.as_tensor(t, dtype=torch.float64)
            bc1 = float(1 - beta1 ** t)
            bc2 = float(1 - beta2 ** t)
            denom = (v.sqrt() / bc2 ** 0.5).add_(eps)
            p.addcdiv_(m, denom, value=-lr / bc1)


def lbfgs_params(opt: Any) -> list:
    """The parameter list an L-BFGS optimizer keeps its state under (``opt._params``).

    Fallback: ``opt.param_groups[0]["params"]`` (L-BFGS supports exactly one group).
    """
    if private_ok("torch") and hasattr(opt, "_params"):
        return opt._params
    return opt.param_groups[0]["params"]


def lbfgs_optimizer(params: list, **kwargs: Any) -> Any:
    """``torch.optim.LBFGS(params, **kwargs)`` that does not import ``torch._dynamo``.

    Why: ``Optimizer.add_param_group`` and ``Optimizer.zero_grad`` are wrapped by
    ``torch._disable_dynamo``, which imports ``torch._dynamo`` on their first call even when nothing is
    compiled: measured on the 2-core reference machine, torch 2.14.1, 1.6 s and +151 MB peak RSS (507
    -> 658 MB after ``import torch``), paid by the first full-batch L-BFGS fit of a process (a
    25-layer probe sweep, the lbfgs recipe's non-linear heads). The private path is a subclass whose
    two methods are the undecorated originals (``__wrapped__``); L-BFGS's own ``step`` is not
    wrapped. Dynamo is never running here (emo does not compile its training), so the
    disabling wrappers have nothing to disable; the subclass is local, ``torch.optim`` is untouched.

    Fallback: ``torch.optim.LBFGS`` itself (the same optimizer, paying the import).
    """
    import torch

    base = torch.optim.Optimizer
    add = getattr(base.add_param_group, "__wrapped__", None)
    zero = getattr(base.zero_grad, "__wrapped__", None)
    if private_ok("torch") and add is not None and zero is not None:
        return _quiet_lbfgs(add, zero)(params, **kwargs)
    return torch.optim.LBFGS(params, **kwargs)


@functools.cache
def _quiet_lbfgs(add: Any, zero: Any) -> type:
    """The ``torch.optim.LBFGS`` subclass of :func:`lbfgs_optimizer` (made once)."""
    import torch

    return type("LBFGS", (torch.optim.LBFGS,), {"add_param_group": add, "zero_grad": zero, "__module__": __name__})


# -- open_clip --------------------------------------------------------------------------------------
def clip_vit_embeds(visual: Any, pixels: Any) -> Any:
    """Token embeddings of an open_clip ``VisionTransformer`` before the first block (after ``ln_pre``).

    Args:
        visual: ``model.visual`` of an open_clip ViT.
        pixels: float tensor (N, 3, H, W), normalised.

    Returns:
        float tensor (N, 1 + patches, width).
    """
    import torch

    if private_ok("open_clip_torch") and hasattr(visual, "_embeds"):
        return visual._embeds(pixels)
    x = visual.conv1(pixels)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.reshape(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    return visual.ln_pre(x)


def clip_vit_pool(visual: Any, x: Any) -> tuple[Any, Any]:
    """``(pooled, tokens)`` of an open_clip ``VisionTransformer`` after its last block (before ``proj``).

    Raises:
        NotImplementedError: on the fallback path, a tower with an attention pool, ``final_ln_after_pool``
            or a pool type other than ``"tok"`` (open_clip's CLIP ViTs use none of these).
    """
    if private_ok("open_clip_torch") and hasattr(visual, "_pool"):
        return visual._pool(x)
    if (getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False)
            or getattr(visual, "pool_type", "tok") != "tok"):
        raise NotImplementedError("emo.compat.clip_vit_pool fallback covers class-token pooling only")
    x = visual.ln_post(x)
    return x[:, 0], x[:, 1:]


# -- opensmile --------------------------------------------------------------------------------------
def smile_engine(smile: Any, **overrides: Any) -> Any:
    """An initialised ``opensmile.core.lib.OpenSMILE`` engine for ``smile`` (an ``opensmile.Smile``),
    its options updated with ``overrides`` (``Smile._options()`` then ``Smile._smile(options)``).

    Fallback: the same option dictionary built from the public attributes ``options``,
    ``default_config_root``, ``feature_level``, and the engine initialised with ``config_path``,
    ``loglevel``, ``logfile`` and ``verbose``.
    """
    if private_ok("opensmile") and hasattr(smile, "_options") and hasattr(smile, "_smile"):
        opts = smile._options()
        opts.update(overrides)
        return smile._smile(opts)
    import os

    from opensmile.core.config import config as ocfg
    from opensmile.core.lib import OpenSMILE

    root = smile.default_config_root
    opts = dict(smile.options)
    opts["sink"] = os.path.join(root, ocfg.EXTERNAL_OUTPUT_SINGLE_CONFIG)
    level = smile.feature_level
    opts["sinkLevel"] = getattr(level, "value", level)
    opts["bufferModeRbConf"] = os.path.join(root, "shared/BufferModeRb.conf.inc")
    opts.setdefault("frameModeFunctionalsConf", os.path.join(root, "shared/FrameModeFunctionals.conf.inc"))
    opts.update(overrides)
    engine = OpenSMILE()
    engine.initialize(config_file=smile.config_path, options=opts, loglevel=smile.loglevel,
                      log_file=smile.logfile, debug=smile.verbose)
    return engine
