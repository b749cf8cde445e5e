"""Multi-process training: 2 CPU processes with the gloo backend (DistributedDataParallel)."""

import os
import socket
import subprocess
import sys

from fmdepth_ros.checkpoint import build_model, load_checkpoint
from fmdepth_ros.config import load_config, save_config
from fmdepth_ros.trainer import seed_everything
import pytest
from test_train import TINY as TRAIN_TINY
import torch
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# test_train's tiny model, one epoch without warm-up
TINY = {'model': dict(TRAIN_TINY['model']),
        'train': dict(TRAIN_TINY['train'], warmup_steps=0, epochs=1)}


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, data, out, result_dir):
    """One rank: join the gloo group via env://, train one step, dump this rank's weights."""
    os.environ.update({'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port),
                       'RANK': str(rank), 'WORLD_SIZE': str(world_size),
                       'LOCAL_RANK': str(rank)})
    torch.set_num_threads(1)
    from fmdepth_ros.data import make_dataset
    from fmdepth_ros.distributed import cleanup_distributed, init_distributed
    from fmdepth_ros.trainer import Trainer

    info = init_distributed('cpu')
    assert info.distributed and info.backend == 'gloo' and info.rank == rank
    cfg = load_config(overrides=TINY)
    trainer = Trainer(cfg, make_dataset(data, cfg, 'train'), out, dist=info, stage='depth',
                      max_steps=1, progress=False, image_every=0)
    seen = []
    original = trainer._train_step

    def recording_step(net, plan, batch, *args):
        seen.extend(int(i) for i in batch['index'])
        return original(net, plan, batch, *args)

    trainer._train_step = recording_step
    assert trainer.run() == 'done'
    params = {k: v.detach() for k, v in trainer.model.named_parameters()}
    torch.save({'state': params, 'indices': seen},
               os.path.join(result_dir, f'rank{rank}.pt'))
    cleanup_distributed(info)


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights_after_a_step(tiny_synth_dir, tmp_path):
    """Gradients are all-reduced: both ranks end with equal weights, different from the init.

    (BatchNorm running statistics are per rank between steps; DDP broadcasts rank 0's at
    every forward, and rank 0 writes the checkpoint.)
    """
    results = tmp_path / 'results'
    results.mkdir()
    out = tmp_path / 'run'
    mp.spawn(_worker, args=(2, _free_port(), tiny_synth_dir, str(out), str(results)), nprocs=2,
             join=True)
    r0 = torch.load(results / 'rank0.pt', weights_only=True)
    r1 = torch.load(results / 'rank1.pt', weights_only=True)
    # DistributedSampler: the ranks trained on different samples
    assert len(r0['indices']) == len(r1['indices']) == 2
    assert not set(r0['indices']) & set(r1['indices'])
    a, b = r0['state'], r1['state']
    for key in a:
        assert torch.equal(a[key], b[key]), key

    cfg = load_config(overrides=TINY)
    seed_everything(cfg.train.seed)
    init = build_model(cfg).state_dict()
    moved = [k for k in a if k.startswith(('depth_net.', 'pose_net.'))
             and not torch.equal(a[k], init[k])]
    assert len(moved) > 50
    assert all(torch.equal(a[k], init[k]) for k in a if k.startswith('feature_net.'))
    # rank 0 alone wrote the checkpoint, recording the world size for --resume
    _, _, ckpt = load_checkpoint(str(out / 'checkpoint.pt'))
    assert ckpt['step'] == 1 and ckpt['extra']['trainer']['world_size'] == 2
    assert torch.equal(load_checkpoint(str(out / 'checkpoint.pt'))[0].state_dict()[
        'depth_net.encoder.conv1.weight'], a['depth_net.encoder.conv1.weight'])


@pytest.mark.slow
def test_torchrun_cli_two_processes(tiny_synth_dir, tmp_path):
    """``torchrun --nproc_per_node 2 -m fmdepth_ros.cli train`` runs, resumes, logs on rank 0."""
    config = tmp_path / 'tiny.yaml'
    save_config(load_config(overrides=TINY), str(config))
    out = tmp_path / 'run'
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)

    def launch(*extra):
        cmd = [torchrun, '--nproc_per_node', '2', '--master_port', str(_free_port()),
               '-m', 'fmdepth_ros.cli', 'train', '--data', tiny_synth_dir, '--out', str(out),
               '--device', 'cpu', '--no-progress', '--stage', 'feature', *extra]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)

    first = launch('--config', str(config), '--max-steps', '1')
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count('done at step 1') == 1     # rank 0 only
    second = launch('--resume', '--max-steps', '2')
    assert second.returncode == 0, second.stderr[-3000:]
    _, _, info = load_checkpoint(str(out / 'checkpoint.pt'))
    assert info['step'] == 2 and info['extra']['trainer']['world_size'] == 2
    assert len(info['extra']['trainer']['rng']) == 2
