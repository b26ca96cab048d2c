"""Evaluation: detection, safety-field agreement, hallucination, judges, reports."""
