"""Checkpoint format: round trip, atomic save under SIGKILL, one-line errors naming the file."""

import os
import signal
import subprocess
import sys
import time

from fmdepth_ros.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, \
    save_checkpoint
from fmdepth_ros.config import small_cpu_config
import pytest
from reference_official import model_factory
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """Save a small model with optimiser and extra state; yield (path, model, cfg, opt)."""
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = model_factory(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.depth_net.decoder.disp1[0].conv.weight.grad = torch.ones_like(
        model.depth_net.decoder.disp1[0].conv.weight)
    opt.step()
    path = str(tmp_path_factory.mktemp('ckpt') / 'model.pt')
    extra = {'rng': {'torch': torch.get_rng_state(), 'python': [3, [1, 2], None]}, 'epoch': 4}
    save_checkpoint(path, model, cfg, step=17, optimizer=opt, extra=extra)
    return path, model, cfg, opt


def test_round_trip(saved):
    """Weights, config, step, optimiser state and extra come back unchanged."""
    path, model, cfg, opt = saved
    loaded, cfg2, info = load_checkpoint(path, model_factory=model_factory)
    assert cfg2.to_dict() == cfg.to_dict()
    assert info['step'] == 17 and info['version'] == 1 and info['extra']['epoch'] == 4
    ref = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert not loaded.training
    opt2 = torch.optim.Adam(loaded.parameters(), lr=1e-4)
    opt2.load_state_dict(info['optimizer'])
    assert opt2.state_dict()['state'].keys() == opt.state_dict()['state'].keys()
    assert read_checkpoint(path)['format'] == 'fmdepth_ros'


def _expect_error(path, pattern):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(str(path), model_factory=model_factory)
    msg = str(info.value)
    assert str(path) in msg and '\n' not in msg
    assert pattern in msg, msg


def test_errors_name_the_file(saved, tmp_path):
    """Missing, empty, truncated, corrupt and foreign files give one-line errors."""
    path = saved[0]
    _expect_error(tmp_path / 'missing.pt', 'no such file')
    empty = tmp_path / 'empty.pt'
    empty.write_bytes(b'')
    _expect_error(empty, 'empty')
    data = open(path, 'rb').read()
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(data[: len(data) // 2])
    _expect_error(truncated, 'truncated')
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(bytes(range(256)) * 50)
    _expect_error(corrupt, 'not a readable torch file')
    foreign = tmp_path / 'foreign.pt'
    torch.save({'weights': torch.zeros(3)}, foreign)
    _expect_error(foreign, 'not an fmdepth_ros checkpoint')
    official = tmp_path / 'official.pth'
    torch.save({'state_dict': {'DepthEncoder.encoder.conv1.weight': torch.zeros(1)}}, official)
    _expect_error(official, 'fmdepth convert')


def test_version_and_weight_mismatch(saved, tmp_path):
    """A newer version or weights of another architecture are refused with key names."""
    ckpt = torch.load(saved[0], weights_only=True)
    newer = dict(ckpt, version=99)
    torch.save(newer, tmp_path / 'newer.pt')
    _expect_error(tmp_path / 'newer.pt', 'version 99')
    cfg = dict(ckpt['config'])
    cfg['model'] = dict(cfg['model'], depth_decoder='monodepth2')
    torch.save(dict(ckpt, config=cfg), tmp_path / 'mismatch.pt')
    _expect_error(tmp_path / 'mismatch.pt', 'decoder.')


CHILD = r'''
import sys, time, torch
from fmdepth_ros.checkpoint import save_checkpoint
from fmdepth_ros.config import small_cpu_config


class Stall:
    """Pickling this stalls the save half-way (the temporary file is open, not complete).

    It creates the file ``sys.argv[2]`` first, so the test knows the save is in the stall.
    """

    def __reduce__(self):
        open(sys.argv[2], 'w').close()
        time.sleep(120)
        return (int, (0,))


big = torch.nn.Linear(4096, 4096)   # 64 MiB of weights
save_checkpoint(sys.argv[1], big, small_cpu_config(), step=2, extra={'stall': Stall()})
'''


def test_sigkill_during_save_keeps_previous_checkpoint(saved, tmp_path):
    """A save killed with SIGKILL half-way leaves the previous checkpoint intact and loadable."""
    path = str(tmp_path / 'run' / 'checkpoint.pt')
    os.makedirs(os.path.dirname(path))
    save_checkpoint(path, saved[1], saved[2], step=1)
    before = open(path, 'rb').read()
    stalled = tmp_path / 'stalled'   # created by the child once the save is half-way
    env = dict(os.environ, PYTHONPATH=ROOT)
    child = subprocess.Popen([sys.executable, '-c', CHILD, path, str(stalled)], cwd=ROOT,
                             env=env)
    try:
        deadline = time.monotonic() + 120
        while not stalled.exists():
            assert child.poll() is None, 'the child exited before the save started'
            assert time.monotonic() < deadline, 'the child never reached the stalled save'
            time.sleep(0.01)   # polling interval of the condition, not a timed wait
        temporary = [n for n in os.listdir(os.path.dirname(path)) if n.endswith('.tmp')]
        assert temporary, 'the save is stalled but no temporary file is open'
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert open(path, 'rb').read() == before
    _, _, info = load_checkpoint(path, model_factory=model_factory)
    assert info['step'] == 1
    save_checkpoint(path, saved[1], saved[2], step=3)   # a leftover temporary file is harmless
    assert load_checkpoint(path, model_factory=model_factory)[2]['step'] == 3


class _Opaque:
    """A pickled class instance: refused by weights-only loading."""


def test_pickled_objects_are_refused(saved, tmp_path):
    """Checkpoints are read with weights_only=True: arbitrary objects are not unpickled."""
    ckpt = torch.load(saved[0], weights_only=True)
    torch.save(dict(ckpt, extra={'x': _Opaque()}), tmp_path / 'opaque.pt')
    _expect_error(tmp_path / 'opaque.pt', 'Unsupported global')


def test_stale_encoder_weights_path_is_not_read_on_load(saved, tmp_path):
    """The ImageNet file named in the config may be gone: stored weights replace it anyway."""
    path, model, cfg, _ = saved
    gone = str(tmp_path / 'gone' / 'resnet18.pth')
    stale = str(tmp_path / 'stale.pt')
    save_checkpoint(stale, model, cfg.merged({'model': {'encoder_weights': gone}}), step=5)
    _, cfg2, info = load_checkpoint(stale)
    assert cfg2.model.encoder_weights == gone and info['step'] == 5
