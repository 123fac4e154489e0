"""emo.fuse.eval: see docs/architecture.md."""
