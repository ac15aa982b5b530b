"""Flax NNX GPT models and their sharding rules."""
