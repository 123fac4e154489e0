"""Stage 1: run frozen foundation models over a dataset and cache layer-wise features."""
