"""Tests of ``fmdepth predict`` (fmdepth_ros.commands.predict)."""

from fmdepth_ros.checkpoint import build_model, save_checkpoint
from fmdepth_ros.cli import main as cli_main
from fmdepth_ros.commands.predict import colorize
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.networks.depth_net import disp_to_depth
import numpy as np
from PIL import Image
import pytest
import torch


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Save a small untrained checkpoint and a folder of two images of different sizes."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp('predict')
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    save_checkpoint(tmp / 'model.pt', model, cfg)
    seq = render_sequence(2, width=200, height=70, seed=1)
    folder = tmp / 'images'
    folder.mkdir()
    Image.fromarray(seq.images[0]).save(folder / 'a.png')
    Image.fromarray(seq.images[1][:64, :192]).save(folder / 'b.jpg')
    (folder / 'notes.txt').write_text('not an image')
    return {'tmp': tmp, 'cfg': cfg, 'model': model, 'ckpt': str(tmp / 'model.pt'),
            'folder': folder, 'seq': seq}


def test_predict_folder_depth(setup):
    """Depth .npy at each input's resolution, matching the network, plus colour PNGs."""
    torch.set_num_threads(1)
    out = setup['tmp'] / 'out_depth'
    assert cli_main(['predict', '--checkpoint', setup['ckpt'], str(setup['folder']),
                     '--out', str(out), '--device', 'cpu']) == 0
    depth_a = np.load(out / 'a.npy')
    assert depth_a.shape == (70, 200) and depth_a.dtype == np.float32
    assert np.load(out / 'b.npy').shape == (64, 192)
    png = np.asarray(Image.open(out / 'a.png'))
    assert png.shape == (70, 200, 3) and png.std() > 0
    assert not (out / 'notes.npy').exists()
    # b.jpg is exactly at the network size: depth = disp_to_depth of the network output.
    cfg = setup['cfg']
    image = torch.from_numpy(np.array(Image.open(setup['folder'] / 'b.jpg'))).permute(2, 0, 1)
    with torch.no_grad():
        disp = setup['model'].depth_net(image[None].float() / 255.0)[0]
        disp_full = torch.nn.functional.interpolate(disp, size=(64, 192), mode='bilinear',
                                                    align_corners=False)
        _, depth = disp_to_depth(disp_full, cfg.model.min_depth, cfg.model.max_depth)
    np.testing.assert_allclose(np.load(out / 'b.npy'), depth[0, 0].numpy(), rtol=1e-3)


def test_predict_single_file_disparity(setup):
    """--disparity stores the scale-0 sigmoid output exactly, at its own resolution."""
    torch.set_num_threads(1)
    out = setup['tmp'] / 'out_disp'
    path = setup['folder'] / 'b.jpg'
    assert cli_main(['predict', '--checkpoint', setup['ckpt'], str(path), '--out', str(out),
                     '--disparity', '--device', 'cpu']) == 0
    disp = np.load(out / 'b.npy')
    assert disp.shape == (32, 96)                      # FeatDepth decoder: half resolution
    image = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = setup['model'].depth_net(image)[0][0, 0].numpy()
    np.testing.assert_allclose(disp, expected, atol=1e-5)
    assert np.asarray(Image.open(out / 'b.png')).shape == (32, 96, 3)
    assert sorted(p.name for p in out.iterdir()) == ['b.npy', 'b.png']   # no temporaries


def test_colorize():
    """Larger values are brighter; the percentile clip saturates outliers."""
    values = np.linspace(0, 1, 100).reshape(10, 10)
    values[0, 0] = 100.0
    rgb = colorize(values)
    assert rgb.shape == (10, 10, 3) and rgb.dtype == np.uint8
    lum = rgb.astype(float).sum(-1)
    assert lum[9, 9] > lum[5, 5] > lum[0, 1]
    with pytest.raises(ValueError, match='colormap'):
        colorize(values, 'no_such_map')


def test_predict_errors(setup, tmp_path, capsys):
    """Missing input / checkpoint, empty folder, a corrupt image and a bad colormap."""
    ckpt = setup['ckpt']
    assert cli_main(['predict', '--checkpoint', ckpt, str(tmp_path / 'x.png'),
                     '--out', str(tmp_path / 'o')]) == 2
    assert 'no such file' in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    assert cli_main(['predict', '--checkpoint', ckpt, str(tmp_path / 'empty'),
                     '--out', str(tmp_path / 'o')]) == 2
    assert cli_main(['predict', '--checkpoint', str(tmp_path / 'none.pt'),
                     str(setup['folder']), '--out', str(tmp_path / 'o')]) == 2
    assert cli_main(['predict', '--checkpoint', ckpt, str(setup['folder']),
                     '--out', str(tmp_path / 'o'), '--colormap', 'nope']) == 2
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'\x89PNG broken')
    assert cli_main(['predict', '--checkpoint', ckpt, str(broken), '--out',
                     str(tmp_path / 'o'), '--device', 'cpu']) == 2
    assert 'cannot read image' in capsys.readouterr().err
