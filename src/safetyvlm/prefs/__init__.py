"""Preferences: pairs (the answer with retrieval vs without) and the verifiable rewards that score them; the
DPO / GRPO runs that train on them are in `safetyvlm.train`."""
