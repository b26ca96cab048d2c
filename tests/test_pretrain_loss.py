"""The base's label-smoothed loss: the model's own loss at zero smoothing, higher (calibrating) above it."""

from types import SimpleNamespace

import numpy as np
import torch

from safetyvlm.data.render import RenderConfig, render_scene
from safetyvlm.model.batch import encode_batch
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.presets import build_preset_parts
from safetyvlm.model.prompts import detection_text
from safetyvlm.train.pretrain import BaseTrainConfig, _FamilyRun


def test_label_smoothing_matches_the_model_loss_at_the_limit_and_adds_to_it_above():
    model, proc, _ = build_preset_parts("mllama", "tiny")
    frame = model_frame("mllama", proc)
    scenes = [render_scene(np.random.default_rng([9, i]), RenderConfig(width=112, height=112)) for i in range(2)]
    batch = encode_batch(proc, [im for im, _ in scenes], [detection_text(t, im.size, frame) for im, t in scenes],
                         task="detect")

    def loss(smoothing):
        run = SimpleNamespace(model=model, cfg=BaseTrainConfig(label_smoothing=smoothing))
        with torch.no_grad():
            return float(_FamilyRun._lm_loss(run, dict(batch)))

    plain = loss(0.0)
    assert abs(loss(1e-9) - plain) < 1e-4  # the smoothed path computes the same mean over answer tokens
    assert loss(0.1) != plain
