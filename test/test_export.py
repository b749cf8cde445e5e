"""``fmdepth export``: weights + config only, same predictions, clear errors."""

import os
import subprocess
import sys

from fmdepth_ros.checkpoint import build_model, CheckpointError, load_checkpoint, \
    save_checkpoint
from fmdepth_ros.commands.export import export_checkpoint
from fmdepth_ros.config import small_cpu_config
import pytest
import torch


@pytest.fixture(scope='module')
def training_checkpoint(tmp_path_factory):
    """Write a checkpoint as fmdepth train does: weights, config, step and Adam state."""
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.depth_net.parameters(), lr=1e-4)
    loss = model.depth_net(torch.rand(1, 3, cfg.model.height, cfg.model.width))[0].mean()
    loss.backward()
    optimizer.step()
    path = tmp_path_factory.mktemp('export') / 'checkpoint.pt'
    save_checkpoint(path, model, cfg, step=42, optimizer=optimizer,
                    extra={'rng': torch.get_rng_state()})
    return path


def _depth(model, cfg):
    image = torch.linspace(0, 1, 3 * cfg.model.height * cfg.model.width).reshape(
        1, 3, cfg.model.height, cfg.model.width)
    with torch.no_grad():
        return model.depth_net(image)[0]


@pytest.mark.parametrize('half', [False, True])
def test_export_drops_optimizer_state_and_keeps_predictions(training_checkpoint, tmp_path, half):
    """The export is smaller, has no optimizer, keeps step/config and predicts the same."""
    dst = tmp_path / 'model.pt'
    summary = export_checkpoint(training_checkpoint, dst, half=half)
    assert summary['dst_bytes'] < summary['src_bytes'] * (0.3 if half else 0.6)
    source, cfg, _ = load_checkpoint(training_checkpoint)
    exported, cfg2, info = load_checkpoint(dst)
    assert info['optimizer'] is None and info['step'] == 42
    assert cfg2.to_dict() == cfg.to_dict()
    assert all(p.dtype == torch.float32 for p in exported.parameters())
    a, b = _depth(source, cfg), _depth(exported, cfg)
    if half:
        assert not torch.equal(a, b)
        torch.testing.assert_close(b, a, rtol=2e-2, atol=1e-3)
    else:
        assert torch.equal(a, b)


def test_export_refuses_bad_sources_with_one_line(tmp_path):
    """A corrupt source or dst == src is a one-line CheckpointError; nothing is written."""
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='bad.pt'):
        export_checkpoint(bad, tmp_path / 'out.pt')
    with pytest.raises(CheckpointError, match='overwrite its source'):
        export_checkpoint(bad, bad)
    assert not (tmp_path / 'out.pt').exists()


def test_export_cli(training_checkpoint, tmp_path):
    """``fmdepth export SRC DST --half`` prints one summary line; a bad file exits 2."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dst = tmp_path / 'model_fp16.pt'
    proc = subprocess.run([sys.executable, '-m', 'fmdepth_ros.cli', 'export',
                           str(training_checkpoint), str(dst), '--half'],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f'wrote {dst}:') and 'float16' in proc.stdout
    assert dst.exists()
    proc = subprocess.run([sys.executable, '-m', 'fmdepth_ros.cli', 'export',
                           str(tmp_path / 'missing.pt'), str(tmp_path / 'x.pt')],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and 'missing.pt' in proc.stderr
