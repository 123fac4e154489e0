"""emo.fuse.methods: see docs/architecture.md."""
