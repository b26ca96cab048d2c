"""Serving: the BentoML service (`service.py`), its config, safe image decoding, the OpenAI-compatible
route, the dashboard page and the packaging of a model into the BentoML model store.

Only `service.py` imports bentoml at import time; the rest stays importable without it.
"""
