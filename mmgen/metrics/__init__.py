"""Offline evaluation: CLIP zero-shot / retrieval / linear probe, and more."""
