"""Proof that ``fmdepth train`` learns: AbsRel on a held-out synthetic sequence drops clearly.

A short CPU run of both stages (FeatureNet, then DepthNet + PoseNet, self-supervised: no
ground truth is used for training) on a rendered corridor, evaluated against the renderer's
exact depth with the paper's protocol (median scaling, 1e-3..80 m), compared with the same
network before training. The numbers and the command are recorded in docs/training.md.
"""

import os
import resource
import time

import numpy as np
import pytest
import torch

from fmdepth_ros import cli, metrics
from fmdepth_ros.checkpoint import build_model, load_checkpoint
from fmdepth_ros.config import load_config, save_config
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.trainer import seed_everything

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 64, 96
TRAIN_FRAMES = 40
FEATURE_STEPS = 10
MAX_STEPS = 160


def learning_config():
    """``config/synthetic_cpu.yaml`` (ResNet-18, 96x64, Monodepth2 decoder) as shipped."""
    cfg = load_config(os.path.join(ROOT, 'config', 'synthetic_cpu.yaml'))
    assert (cfg.model.height, cfg.model.width) == (HEIGHT, WIDTH)
    return cfg


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def depth_metrics(model, seq, cfg):
    """Mean Eigen metrics of ``model`` on every frame of ``seq`` (median-scaled, no crop)."""
    model.eval()
    with torch.no_grad():
        images = torch.from_numpy(seq.images).permute(0, 3, 1, 2).float() / 255.0
        disp = model.depth_net(images)[0][:, 0].numpy()
    per_image = []
    for d, gt in zip(disp, seq.depths):
        pred = metrics.disparity_to_eval_depth(d, gt.shape, cfg.model.min_depth,
                                               cfg.model.max_depth)
        per_image.append(metrics.evaluate_depth(gt, pred, garg_crop=False)[0])
    return metrics.mean_errors(per_image)


@pytest.mark.slow
def test_training_lowers_abs_rel_on_held_out_synthetic_sequence(tmp_path):
    """Self-supervised CPU training cuts AbsRel well below the untrained network's."""
    torch.set_num_threads(1)     # robust on a shared machine; ~2 min CPU in all
    cfg = learning_config()
    config = tmp_path / 'learn.yaml'
    save_config(cfg, str(config))
    data = tmp_path / 'train_seq'
    assert cli.main(['synth', str(data), '--frames', str(TRAIN_FRAMES), '--width', str(WIDTH),
                     '--height', str(HEIGHT), '--seed', '0']) == 0
    held_out = render_sequence(16, width=WIDTH, height=HEIGHT, seed=7)

    seed_everything(cfg.train.seed)        # the trainer's initial weights
    before = depth_metrics(build_model(cfg), held_out, cfg)

    start, cpu_start = time.time(), _cpu_seconds()
    out = tmp_path / 'run'
    assert cli.main(['train', '--data', str(data), '--config', str(config), '--out', str(out),
                     '--device', 'cpu', '--no-progress', '--feature-steps', str(FEATURE_STEPS),
                     '--max-steps', str(MAX_STEPS), '--checkpoint-every', '0']) == 0
    seconds, cpu = time.time() - start, _cpu_seconds() - cpu_start
    model, _, info = load_checkpoint(str(out / 'checkpoint.pt'))
    assert info['step'] == MAX_STEPS
    after = depth_metrics(model, held_out, cfg)

    rows = ['| model | steps | AbsRel | SqRel | RMSE | RMSElog | d1 | d2 | d3 |',
            '|---|---|---|---|---|---|---|---|---|']
    for name, steps, m in (('untrained', 0, before), ('trained', MAX_STEPS, after)):
        rows.append(f'| {name} | {steps} | ' + ' | '.join(
            f'{m[k]:.3f}' for k in metrics.DEPTH_METRICS) + ' |')
    print('\n' + '\n'.join(rows) + f'\ntraining: {seconds:.0f} s wall, {cpu:.0f} s CPU, '
          f'{torch.get_num_threads()} thread(s)')

    assert np.isfinite(after['abs_rel'])
    assert after['abs_rel'] < 0.75 * before['abs_rel'], (before, after)
    assert after['a1'] > before['a1'] + 0.05, (before, after)
