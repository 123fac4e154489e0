"""A fusion head defined in this file only (no edit to emo) trains from the command line: the head
registry (emo.fuse.model.heads.register_head) and the --plugin option / $EMO_PLUGINS (docs/cli.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from emo.fuse.model.heads import HEADS, register_head

HERE = Path(__file__).resolve().parent


@register_head("test-gated-sum")
class GatedSum(nn.Module):
    """Each token projected to H, summed with a learned sigmoid gate per token."""

    def __init__(self, tokens, hidden: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(t.dim, hidden) for t in tokens)
        self.gate = nn.Parameter(torch.zeros(len(tokens)))
        self.out_dim = hidden

    def forward(self, xs):
        g = torch.sigmoid(self.gate)
        return sum(g[i] * torch.relu(p(x)) for i, (p, x) in enumerate(zip(self.proj, xs))), {}


def _emo(*args: str, env_plugins: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("EMO_PLUGINS", None)
    if env_plugins:
        env["EMO_PLUGINS"] = env_plugins
    return subprocess.run([sys.executable, "-m", "emo.cli", *args], capture_output=True, text=True, env=env, timeout=600)


def test_registered_head_is_a_choice_in_process():
    assert "test-gated-sum" in HEADS and list(HEADS)[:6] == ["afg", "attention", "transformer", "mlp", "linear", "univa"]
    from emo.fuse.config import TrainConfig

    TrainConfig(head="test-gated-sum").validate()


def test_head_defined_in_a_test_file_trains_from_the_cli(tmp_path):
    from test_fuse_run import make_dataset

    feats = make_dataset(tmp_path)
    common = ["fuse", "train", "--dataset", "synth", "--features-dir", str(feats), "--features", "egemaps",
              "--features", "hubert_large:1-3", "--head", "test-gated-sum", "--epochs", "4", "--hidden", "8",
              "--seeds", "1", "--folds", "3"]
    r = _emo(*common, "--out", str(tmp_path / "none"))
    assert r.returncode == 2 and "--head must be one of" in r.stderr and "test-gated-sum" in r.stderr, r.stderr
    r = _emo("--plugin", "test_cli_plugin_head", *common, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stdout + r.stderr
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["training"]["head"] == "test-gated-sum"
    pooled = json.loads((tmp_path / "run" / "metrics.json").read_text())["pooled"]
    assert 0.0 <= pooled["uar"] <= 1.0
    # the same through $EMO_PLUGINS; and the head is listed in --help
    r = _emo("fuse", "train", "--help", env_plugins="test_cli_plugin_head")
    assert r.returncode == 0 and "test-gated-sum" in r.stdout, r.stdout
    r = _emo("--plugin", "no_such_plugin_module", "fuse", "train", "--help")
    assert r.returncode == 2 and "no_such_plugin_module" in r.stderr
