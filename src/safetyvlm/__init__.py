"""SafetyVLM: find industrial hand tools in a photo and say how to use them safely."""

__version__ = "0.1.0"
