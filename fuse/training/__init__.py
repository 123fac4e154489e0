"""emo.fuse.training: see docs/architecture.md."""
