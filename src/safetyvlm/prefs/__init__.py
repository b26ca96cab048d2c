"""Preference stages: pairs (answer with retrieval vs without), verifiable rewards, DPO / GRPO training."""
