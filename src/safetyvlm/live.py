"""Training curves through DVCLive: one directory per run (the stages use `metrics/live/<stage>/<run>`),
each logged metric a TSV under `<dir>/plots/metrics/` that dvc.yaml declares as plots.

The Live object never edits dvc.yaml and never saves a DVC experiment of its own (the stage runs inside
`dvc repro` / `dvc exp run`, which record the outputs)."""

from __future__ import annotations

from pathlib import Path


def open_live(directory: str | Path):
    from dvclive import Live

    return Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)


def trainer_callbacks(directory: str | Path | None) -> list:
    """A transformers `DVCLiveCallback` logging to `directory` (TRL's trainers log through it: loss, learning
    rate, DPO's rewards/margins, GRPO's reward); [] when `directory` is None."""
    if directory is None:
        return []
    from transformers.integrations import DVCLiveCallback

    return [DVCLiveCallback(live=open_live(directory))]
