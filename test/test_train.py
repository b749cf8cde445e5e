"""Tests of ``fmdepth train``: schedule, data order, bit-exact resume, Ctrl-C, TensorBoard."""

import glob
import os
import signal
import subprocess
import sys
import time

from fmdepth_ros import cli
from fmdepth_ros.checkpoint import load_checkpoint
from fmdepth_ros.config import load_config, save_config
from fmdepth_ros.errors import TrainingError
from fmdepth_ros.trainer import (capture_rng_state, plan_stages, resolve_precision,
                                 restore_rng_state, ResumableSampler, SeededDataset,
                                 stage_milestones, WarmupStepSchedule)
import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 64x96 ResNet-18 keeps a step well under a second on one CPU core.
TINY = {
    'model': {'height': 64, 'width': 96, 'depth_layers': 18, 'feature_layers': 18,
              'pose_height': 64, 'pose_width': 96},
    'train': {'batch_size': 2, 'num_workers': 0, 'amp': False, 'warmup_steps': 2,
              'epochs': 2, 'feature_epochs': 1, 'log_every': 1, 'checkpoint_every': 0},
}


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    """YAML file of the tiny training configuration."""
    path = tmp_path_factory.mktemp('cfg') / 'tiny.yaml'
    save_config(load_config(overrides=TINY), str(path))
    return str(path)


def _train(tiny_synth_dir, config, out, *extra):
    torch.set_num_threads(1)
    return cli.main(['train', '--data', tiny_synth_dir, '--config', config, '--out', str(out),
                     '--device', 'cpu', '--no-progress', *extra])


def test_warmup_step_schedule():
    """Linear warm-up from ratio to 1, then x0.5 at each milestone (official mmcv schedule)."""
    sched = WarmupStepSchedule(4, 1.0 / 3.0, [10, 20])
    assert sched(0) == pytest.approx(1.0 / 3.0)
    assert sched(2) == pytest.approx(1.0 / 3.0 + (2.0 / 3.0) * 0.5)
    assert sched(4) == pytest.approx(1.0)
    assert sched(9) == pytest.approx(1.0)
    assert sched(10) == pytest.approx(0.5)
    assert sched(25) == pytest.approx(0.25)


def test_paper_schedule_from_config():
    """Paper defaults: depth milestones at epochs 20/30; FeatureNet stage 10/20 of 30."""
    cfg = load_config(os.path.join(ROOT, 'config', 'featdepth_kitti.yaml'))
    assert (cfg.model.height, cfg.model.width, cfg.model.depth_layers) == (320, 1024, 50)
    assert cfg.train.lr == 1e-4 and cfg.train.grad_clip == 35.0
    assert stage_milestones('depth', cfg, 100) == [2000, 3000]
    assert stage_milestones('feature', cfg, 100) == [1000, 2000]
    plans = plan_stages('both', 100, cfg, None)
    expected = [('feature', 0, 3000), ('depth', 3000, 4000)]
    assert [(p.name, p.start, p.steps) for p in plans] == expected
    assert [p.name for p in plan_stages('depth', 100, cfg, 7)] == ['depth']
    assert plan_stages('both', 100, cfg, 7)[1].start == 7
    small = load_config(os.path.join(ROOT, 'config', 'featdepth_kitti_640x192.yaml'))
    assert (small.model.height, small.model.width) == (192, 640)
    cpu = load_config(os.path.join(ROOT, 'config', 'synthetic_cpu.yaml'))
    assert cpu.model.depth_layers == 18 and cpu.train.num_workers == 0
    assert (cpu.model.height, cpu.model.width) == (64, 96)


def test_step_counts_and_precision_from_config():
    """depth_steps fixes the depth stage length and keeps the milestones' place in it."""
    cfg = load_config(os.path.join(ROOT, 'config', 'kitti_cpu.yaml'))
    assert cfg.train.depth_steps and not cfg.train.feature_steps      # no FeatureNet stage
    plans = plan_stages('both', 49, cfg, None)
    assert [(p.name, p.steps) for p in plans] == [('feature', 0), ('depth', cfg.train.depth_steps)]
    cfg.train.feature_steps = 40
    assert [(p.name, p.steps) for p in plan_stages('both', 49, cfg, None)] == [
        ('feature', 40), ('depth', cfg.train.depth_steps)]
    n = cfg.train.depth_steps
    assert stage_milestones('depth', cfg, 49) == [int(n * 20 / 40), int(n * 30 / 40)]
    assert resolve_precision('auto', False, 'cpu') == 'auto'       # measured at the first step
    assert resolve_precision('auto', False, 'cuda') == 'fp16'
    assert resolve_precision('fp32', True, 'cuda') == 'fp16'       # the older amp key
    assert resolve_precision('fp32', True, 'cpu') == 'fp32'
    assert resolve_precision('bf16', False, 'cpu') == 'bf16'
    with pytest.raises(TrainingError, match='fp16 needs CUDA'):
        resolve_precision('fp16', False, 'cpu')
    with pytest.raises(TrainingError, match='one of'):
        resolve_precision('int8', False, 'cpu')


def test_resumable_sampler_skips_the_head_of_the_same_order():
    """A resumed epoch yields exactly the tail of the uninterrupted epoch, shard by shard."""
    data = list(range(23))
    for rank in (0, 1):
        full = ResumableSampler(data, 2, rank, seed=5)
        full.set_position(3, 0)
        order = list(full)
        part = ResumableSampler(data, 2, rank, seed=5)
        part.set_position(3, 4)
        assert list(part) == order[4:] and len(part) == len(order) - 4
    a, b = ResumableSampler(data, 2, 0, seed=5), ResumableSampler(data, 2, 1, seed=5)
    assert set(a) | set(b) == set(data)
    a.set_position(4, 0)
    assert list(a) != order


class _RandomItems:
    """Dataset whose items are draws of every global RNG (like flip / jitter decisions)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import random
        return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_seeded_dataset_is_a_function_of_seed_epoch_index_and_keeps_global_rng():
    """Augmentation draws depend only on (seed, epoch, index); the training RNG is untouched."""
    ds = SeededDataset(_RandomItems(), seed=1)
    torch.manual_seed(0)
    before = capture_rng_state()
    first = [ds[i] for i in range(8)]
    after = capture_rng_state()
    assert torch.equal(before['torch'], after['torch'])
    assert before['python'] == after['python'] and before['numpy'] == after['numpy']
    assert [ds[i] for i in reversed(range(8))] == first[::-1]
    assert len({x[0] for x in first}) == 8
    ds.epoch = 1
    assert ds[0] != first[0]
    torch.manual_seed(123)
    restore_rng_state(before)
    assert torch.equal(torch.get_rng_state(), before['torch'])


def _state(path):
    model, cfg, info = load_checkpoint(path)
    return model.state_dict(), info


@pytest.mark.slow
def test_resume_is_bit_exact_and_logs_tensorboard(tiny_synth_dir, tiny_config, tmp_path):
    """6 steps straight == 3 steps + resume to 6 (model, optimiser, RNG, data order)."""
    straight = tmp_path / 'straight'
    split = tmp_path / 'split'
    args = ('--stage', 'both', '--feature-steps', '2', '--image-every', '2')
    assert _train(tiny_synth_dir, tiny_config, straight, '--max-steps', '6', *args) == 0
    assert _train(tiny_synth_dir, tiny_config, split, '--max-steps', '3', *args) == 0
    mid, info3 = _state(str(split / 'checkpoint.pt'))
    assert info3['step'] == 3 and info3['extra']['trainer']['stage'] == 'depth'
    assert _train(tiny_synth_dir, tiny_config, split, '--max-steps', '6', '--resume') == 0

    a, info_a = _state(str(straight / 'checkpoint.pt'))
    b, info_b = _state(str(split / 'checkpoint.pt'))
    assert info_a['step'] == info_b['step'] == 6
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    opt_a, opt_b = info_a['optimizer']['state'], info_b['optimizer']['state']
    assert opt_a.keys() == opt_b.keys() and len(opt_a) > 0
    for k in opt_a:
        assert torch.equal(opt_a[k]['exp_avg'], opt_b[k]['exp_avg'])
    # steps 4-6 trained DepthNet / PoseNet and left the frozen FeatureNet alone
    for key in ('depth_net.encoder.conv1.weight', 'pose_net.decoder.conv3.weight'):
        assert not torch.equal(mid[key], a[key]), key
    frozen = [k for k in a if k.startswith('feature_net.')]
    assert frozen and all(torch.equal(mid[k], a[k]) for k in frozen)

    # TensorBoard: per-stage scalars and colour-mapped disparity images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(straight / 'tb'), size_guidance={'images': 0})
    events.Reload()
    tags = events.Tags()
    assert {'feature/total', 'depth/total', 'depth/lr', 'speed/images_per_s'} <= set(
        tags['scalars'])
    assert 'depth/disparity' in tags['images'] and 'feature/reconstruction' in tags['images']
    assert [e.step for e in events.Scalars('depth/total')] == [3, 4, 5, 6]
    assert os.path.isfile(straight / 'config.yaml')


def test_resume_changes_nothing_when_the_run_is_complete(tiny_synth_dir, tiny_config, tmp_path):
    """Resuming a run past its last step is a no-op that still exits 0."""
    out = tmp_path / 'run'
    assert _train(tiny_synth_dir, tiny_config, out, '--stage', 'feature', '--max-steps', '2') == 0
    before, _ = _state(str(out / 'checkpoint.pt'))
    assert _train(tiny_synth_dir, tiny_config, out, '--resume', '--max-steps', '2') == 0
    after, info = _state(str(out / 'checkpoint.pt'))
    assert info['step'] == 2
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resume_continues(tiny_synth_dir, tiny_config, tmp_path):
    """Ctrl-C in a real subprocess: checkpoint written, exit code 130, --resume goes on."""
    out = tmp_path / 'run'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    cmd = [sys.executable, '-m', 'fmdepth_ros.cli', 'train', '--data', tiny_synth_dir,
           '--config', tiny_config, '--out', str(out), '--device', 'cpu', '--no-progress',
           '--max-steps', '100000', '--stage', 'depth']
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not glob.glob(str(out / 'tb' / 'events.*')):   # first step logged
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, 'training did not start'
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert 'Traceback' not in err
    assert 'continue with --resume' in err
    _, info = _state(str(out / 'checkpoint.pt'))
    step = info['step']
    assert step >= 1
    assert not glob.glob(str(out / '*.tmp*'))
    assert _train(tiny_synth_dir, tiny_config, out, '--resume', '--max-steps', str(step + 1)) == 0
    assert _state(str(out / 'checkpoint.pt'))[1]['step'] == step + 1


def test_user_errors_are_one_line(tiny_synth_dir, tiny_config, tmp_path, capsys):
    """Bad paths, a missing or existing checkpoint and a bad config give exit code 2."""
    out = tmp_path / 'run'
    assert _train(tiny_synth_dir, tiny_config, out, '--resume') == 2
    assert '--resume: no checkpoint' in capsys.readouterr().err
    assert _train(str(tmp_path / 'nope'), tiny_config, out) == 2
    assert 'no such file or directory' in capsys.readouterr().err
    bad = tmp_path / 'bad.yaml'
    bad.write_text('train:\n  learning_rate: 1.0\n')
    assert _train(tiny_synth_dir, str(bad), out) == 2
    err = capsys.readouterr().err
    assert 'unknown key' in err and len(err.strip().splitlines()) == 1
    os.makedirs(out)
    (out / 'checkpoint.pt').write_bytes(b'x')
    assert _train(tiny_synth_dir, tiny_config, out) == 2
    assert 'pass --resume' in capsys.readouterr().err
    assert _train(tiny_synth_dir, tiny_config, out, '--resume') == 2
    err = capsys.readouterr().err
    assert err.startswith('fmdepth train: error:') and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_epoch_checkpoints_keep_the_last_n(tiny_synth_dir, tmp_path):
    """Each finished epoch leaves epoch_<k>.pt (a full checkpoint); only the newest N stay."""
    config = tmp_path / 'keep1.yaml'
    save_config(load_config(overrides=TINY).merged({'train': {'keep_epoch_checkpoints': 1}}),
                str(config))
    out = tmp_path / 'run'
    assert _train(tiny_synth_dir, str(config), out) == 0     # 1 feature epoch + 2 depth epochs
    names = sorted(n for n in os.listdir(out) if n.endswith('.pt'))
    assert names == ['checkpoint.pt', 'epoch_2.pt', 'feature_epoch_1.pt']
    last, info = _state(str(out / 'checkpoint.pt'))
    copy, copy_info = _state(str(out / 'epoch_2.pt'))
    assert copy_info['step'] == info['step'] == 12       # 4 batches per epoch
    assert all(torch.equal(last[k], copy[k]) for k in last)
    feature, feature_info = _state(str(out / 'feature_epoch_1.pt'))
    assert feature_info['step'] == 4 and feature_info['extra']['trainer']['stage'] == 'feature'
