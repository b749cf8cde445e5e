"""Proof that ``fmdepth train`` learns: AbsRel on a held-out synthetic sequence drops clearly.

A short CPU run of both stages (FeatureNet, then DepthNet + PoseNet, self-supervised: no
ground truth is used for training) on a rendered corridor, evaluated against the renderer's
exact depth with the paper's protocol (median scaling, 1e-3..80 m), compared with the same
network before training. The numbers and the command are recorded in docs/training.md. The
training itself is the session fixture ``trained_model`` (test/trained_model.py, the same run
as ``fmdepth demo`` phase a), shared with the node's online refinement test.
"""

import os

from fmdepth_ros import metrics
from fmdepth_ros.checkpoint import build_model, load_checkpoint
from fmdepth_ros.config import load_config
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.trainer import seed_everything
import numpy as np
import pytest
import torch
from trained_model import MAX_STEPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 64, 96


def learning_config():
    """``config/synthetic_cpu.yaml`` (ResNet-18, 96x64, Monodepth2 decoder) as shipped."""
    cfg = load_config(os.path.join(ROOT, 'config', 'synthetic_cpu.yaml'))
    assert (cfg.model.height, cfg.model.width) == (HEIGHT, WIDTH)
    return cfg


def depth_metrics(model, seq, cfg):
    """Mean Eigen metrics of ``model`` on every frame of ``seq`` (median-scaled, no crop)."""
    model.eval()
    with torch.no_grad():
        images = torch.from_numpy(seq.images).permute(0, 3, 1, 2).float() / 255.0
        disp = model.depth_net(images)[0][:, 0].numpy()
    scores = metrics.DepthMetricAccumulator(garg_crop=False)
    for d, gt in zip(disp, seq.depths):
        scores.add(gt, metrics.disparity_to_eval_depth(d, gt.shape, cfg.model.min_depth,
                                                       cfg.model.max_depth))
    return scores.result()


@pytest.mark.slow
def test_training_lowers_abs_rel_on_held_out_synthetic_sequence(trained_model):
    """Self-supervised CPU training cuts AbsRel well below the untrained network's."""
    cfg = learning_config()
    held_out = render_sequence(16, width=WIDTH, height=HEIGHT, seed=7)

    seed_everything(cfg.train.seed)        # the trainer's initial weights
    before = depth_metrics(build_model(cfg), held_out, cfg)

    model, trained_cfg, info = load_checkpoint(trained_model.checkpoint)
    assert info['step'] == MAX_STEPS
    assert trained_cfg.model.depth_decoder == cfg.model.depth_decoder
    after = depth_metrics(model, held_out, cfg)

    rows = ['| model | steps | AbsRel | SqRel | RMSE | RMSElog | d1 | d2 | d3 |',
            '|---|---|---|---|---|---|---|---|---|']
    for name, steps, m in (('untrained', 0, before), ('trained', MAX_STEPS, after)):
        rows.append(f'| {name} | {steps} | ' + ' | '.join(
            f'{m[k]:.3f}' for k in metrics.DEPTH_METRICS) + ' |')
    print('\n' + '\n'.join(rows) + f'\ntraining: {trained_model.wall_seconds:.0f} s wall, '
          f'{trained_model.cpu_seconds:.0f} s CPU, {trained_model.threads} thread(s)')

    assert np.isfinite(after['abs_rel'])
    assert after['abs_rel'] < 0.75 * before['abs_rel'], (before, after)
    assert after['a1'] > before['a1'] + 0.05, (before, after)
