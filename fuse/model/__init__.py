"""emo.fuse.model.multimodal: see docs/architecture.md."""
