"""Flax NNX GPT models and their sharding rules (the trainer lives in ``experiments``)."""
