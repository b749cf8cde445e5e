"""Tests of ``fmdepth evaluate`` (fmdepth_ros.evaluation) on generated data."""

import importlib.util
import json
import os

from fmdepth_ros.checkpoint import build_model, save_checkpoint
from fmdepth_ros.cli import main as cli_main
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.data import make_dataset
from fmdepth_ros.data.folder import FolderSource
from fmdepth_ros.data.synth import render_sequence, write_sequence
from fmdepth_ros.data.triplets import FrameSource
from fmdepth_ros.evaluation import evaluate_depth_dataset, evaluate_trajectory, format_table
from fmdepth_ros.metrics import disparity_to_eval_depth, evaluate_depth
import numpy as np
import pytest
import torch


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Untrained small model saved as a checkpoint, and a 6-frame synthetic sequence."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp('eval')
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    ckpt = tmp / 'model.pt'
    save_checkpoint(ckpt, model, cfg, step=7)
    seq = render_sequence(6, width=cfg.model.width, height=cfg.model.height, seed=5)
    write_sequence(seq, tmp / 'seq')
    return {'tmp': tmp, 'cfg': cfg, 'model': model, 'ckpt': ckpt, 'seq': seq,
            'data': tmp / 'seq'}


def test_depth_protocol_matches_manual_computation(setup):
    """The evaluator's numbers equal the protocol applied by hand on each frame."""
    cfg, model, seq = setup['cfg'], setup['model'], setup['seq']
    torch.set_num_threads(1)
    dataset = make_dataset(setup['data'], cfg, split='test')
    result = evaluate_depth_dataset(model, cfg, dataset, max_samples=2, progress=False)
    assert result['num_images'] == 2 and result['num_skipped'] == 0
    manual = []
    for i in range(2):
        image = torch.from_numpy(seq.images[i]).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            disp = model.depth_net(image)[0][0, 0].numpy()
        pred = disparity_to_eval_depth(disp, seq.depths[i].shape)
        manual.append(evaluate_depth(seq.depths[i], pred)[0])
    for key in ('abs_rel', 'rmse', 'a1'):
        assert result[key] == pytest.approx(np.mean([m[key] for m in manual]), rel=1e-5)
    # An untrained network is far from the truth, but the numbers are sane.
    assert 0.0 < result['abs_rel'] < 5.0 and 0.0 <= result['a1'] <= 1.0


def test_refinement_changes_the_prediction_of_a_copy(setup):
    """--refine-steps refines a fresh copy per sample: the checkpoint model is untouched."""
    cfg, model = setup['cfg'], setup['model']
    torch.set_num_threads(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = make_dataset(setup['data'], cfg, split='test')
    plain = evaluate_depth_dataset(model, cfg, dataset, max_samples=1, progress=False)
    refined = evaluate_depth_dataset(model, cfg, dataset, refine_steps=1, max_samples=1,
                                     progress=False)
    assert refined['refine']['steps'] == 1
    assert refined['abs_rel'] != plain['abs_rel'] or refined['refine']['reverted'] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_trajectory_chaining_with_exact_relative_poses(setup):
    """An estimator returning the true T_earlier_later (at half scale) gives zero ATE."""
    source = FolderSource(setup['data'])
    poses = setup['seq'].poses
    frames = {source.load_image(i).tobytes(): i for i in range(len(source))}

    def oracle(earlier, later):
        a, b = frames[earlier.tobytes()], frames[later.tobytes()]
        T = np.linalg.inv(poses[a]) @ poses[b]
        T[:3, 3] *= 0.5
        return T

    result = evaluate_trajectory(source, oracle, progress=False)
    assert result['ate'] < 1e-6 and result['ate_sim3'] < 1e-6
    assert result['scale'] == pytest.approx(2.0)
    assert result['num_frames'] == 6 and result['snippet_ate_mean'] < 1e-6

    def reversed_direction(earlier, later):   # the wrong convention must show up
        return np.linalg.inv(oracle(earlier, later))

    # Scale alignment would need a negative scale (camera driving backwards).
    assert evaluate_trajectory(source, reversed_direction, progress=False)['scale'] < 0


class _LongDrive(FrameSource):
    """120 tiny frames 1 m apart (frame index encoded in the pixels), with GT poses."""

    def __init__(self):
        self.name = 'long'
        self.poses = np.tile(np.eye(4), (120, 1, 1))
        self.poses[:, 2, 3] = np.arange(120.0)
        self.poses[:, 0, 3] = 0.1 * np.sin(np.arange(120.0) / 7.0)

    def __len__(self):
        return 120

    def load_image(self, i):
        return np.full((4, 4, 3), i, np.uint8)


def test_trajectory_kitti_segment_errors():
    """Trajectories of 100 m or more also get KITTI t_err / r_err of the scaled trajectory."""
    source = _LongDrive()

    def oracle(earlier, later):
        a, b = int(earlier[0, 0, 0]), int(later[0, 0, 0])
        T = np.linalg.inv(source.poses[a]) @ source.poses[b]
        T[:3, 3] *= 0.25
        return T

    result = evaluate_trajectory(source, oracle, progress=False)
    assert result['num_segments'] == 2                  # starts 0 and 10 reach 100 m
    assert result['t_err_pct'] < 1e-6 and result['r_err_deg_per_100m'] < 1e-6
    assert 't_err' in format_table({'odometry': {'long': result}})


def test_cli_writes_json_and_table(setup, capsys):
    """`fmdepth evaluate` prints the table and writes JSON with depth and odometry results."""
    torch.set_num_threads(1)
    out = setup['tmp'] / 'res' / 'metrics.json'
    rc = cli_main(['evaluate', '--checkpoint', str(setup['ckpt']), '--data',
                   str(setup['data']), '--json', str(out), '--device', 'cpu',
                   '--max-samples', '2'])
    assert rc == 0
    text = capsys.readouterr().out
    assert 'AbsRel' in text and 'ATE seq' in text
    data = json.loads(out.read_text())
    assert data['depth']['num_images'] == 2 and data['step'] == 7
    assert data['odometry']['seq']['num_frames'] == 6
    assert np.isfinite(data['odometry']['seq']['ate'])
    assert format_table(data).splitlines()[0].split()[0] == 'AbsRel'
    # Baselines (on by default): the checkpoint is the untrained net of its config and seed,
    # so its row and the untrained row agree (an untrained net is nearly constant, too).
    rows = [line.split()[0] for line in text.splitlines()[1:4]]
    assert rows == ['checkpoint', 'untrained', 'constant']
    untrained, constant = data['baselines']['untrained'], data['baselines']['constant']
    assert untrained['depth']['abs_rel'] == pytest.approx(data['depth']['abs_rel'], rel=1e-6)
    assert untrained['odometry']['seq']['ate'] == pytest.approx(
        data['odometry']['seq']['ate'], rel=1e-6)
    assert constant['depth']['num_images'] == 2
    assert np.isfinite(constant['odometry']['seq']['ate'])
    assert 'baselines' not in data['depth']


def test_cli_without_baselines(setup, capsys):
    """--no-baselines prints and stores the checkpoint's rows only."""
    torch.set_num_threads(1)
    out = setup['tmp'] / 'res' / 'plain.json'
    assert cli_main(['evaluate', '--checkpoint', str(setup['ckpt']), '--data',
                     str(setup['data']), '--json', str(out), '--device', 'cpu',
                     '--max-samples', '1', '--no-baselines', '--no-odometry']) == 0
    assert 'untrained' not in capsys.readouterr().out
    assert 'baselines' not in json.loads(out.read_text())


def test_cli_refinement_target_and_lr(setup, capsys):
    """--refine-target / --refine-lr reach the refinement and the JSON; bad lr is one line."""
    torch.set_num_threads(1)
    out = setup['tmp'] / 'res' / 'refined.json'
    base = ['evaluate', '--checkpoint', str(setup['ckpt']), '--data', str(setup['data']),
            '--device', 'cpu', '--max-samples', '1', '--no-baselines', '--no-odometry']
    assert cli_main(base + ['--refine-steps', '2', '--json', str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data['refine_target'], data['refine_lr']) == ('all', 1e-4)   # official defaults
    assert data['depth']['refine']['steps'] == 2
    assert cli_main(base + ['--refine-steps', '1', '--refine-target', 'decoder',
                            '--refine-lr', '5e-5', '--json', str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data['refine_target'], data['refine_lr']) == ('decoder', 5e-5)
    capsys.readouterr()
    assert cli_main(base + ['--refine-lr', '0']) == 2
    assert '--refine-lr must be > 0' in capsys.readouterr().err


def test_constant_depth_baseline_is_the_median_guess():
    """After median scaling the constant guess predicts each image's GT median everywhere."""
    gt = np.array([[2.0, 4.0], [8.0, 0.0]])
    errors, _ = evaluate_depth(gt, np.ones(gt.shape), garg_crop=False)
    assert errors['abs_rel'] == pytest.approx(np.mean(np.abs(gt[gt > 0] - 4.0) / gt[gt > 0]))


def test_cli_errors(setup, tmp_path, capsys):
    """Missing files, bad values and data without ground truth give one-line errors."""
    ckpt = str(setup['ckpt'])
    assert cli_main(['evaluate', '--checkpoint', str(tmp_path / 'x.pt'), '--data',
                     str(setup['data'])]) == 2
    assert 'no such file' in capsys.readouterr().err
    assert cli_main(['evaluate', '--checkpoint', ckpt, '--data', str(tmp_path / 'nope')]) == 2
    assert cli_main(['evaluate', '--checkpoint', ckpt, '--data', str(setup['data']),
                     '--refine-steps', '-1']) == 2
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    assert cli_main(['evaluate', '--checkpoint', str(bad), '--data', str(setup['data']),
                     '--device', 'cpu']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 3 and 'bad.pt' in err
    frames = tmp_path / 'frames'
    frames.mkdir()
    (frames / 'a.png').write_bytes((setup['data'] / 'images' / '000000.png').read_bytes())
    (frames / 'intrinsics.txt').write_text('100 100 96 32\n')
    assert cli_main(['evaluate', '--checkpoint', ckpt, '--data', str(frames),
                     '--device', 'cpu']) == 2
    assert 'no ground truth' in capsys.readouterr().err


ODOM = '/work/shared/data/kitti_odometry_01_frames_000-050'
RAW_GT = '/work/shared/data/kitti_raw_0001_gt_depth'


@pytest.mark.skipif(not os.path.isdir(ODOM), reason='real KITTI odometry sample absent')
def test_real_kitti_odometry_sequence(setup):
    """KITTI odometry layout (image_l, bare-P calib.txt, poses.txt): odometry only, 51 frames."""
    torch.set_num_threads(1)
    cfg, model = setup['cfg'], setup['model']
    from fmdepth_ros.evaluation import evaluate_data

    results = evaluate_data(model, cfg, ODOM, device='cpu', progress=False)
    assert 'depth' not in results
    (name, odo), = results['odometry'].items()
    assert name == os.path.basename(ODOM) and odo['num_frames'] == 51
    assert 30.0 < odo['trajectory_length_m'] < 200.0     # ~1 m per frame (accelerating)
    assert np.isfinite(odo['ate']) and odo['ate'] > 0


@pytest.mark.skipif(not os.path.isdir(RAW_GT), reason='real KITTI depth sample absent')
def test_real_kitti_depth_png_gt(setup, capsys):
    """Folder with rgb/ + depth/ benchmark PNGs and --intrinsics: Eigen metrics on 2 images."""
    torch.set_num_threads(1)
    rc = cli_main(['evaluate', '--checkpoint', str(setup['ckpt']), '--data', RAW_GT,
                   '--intrinsics', '721.5377', '721.5377', '609.5593', '172.854',
                   '--device', 'cpu'])
    assert rc == 0
    out = capsys.readouterr().out
    assert '(2 images, 0 without GT' in out


@pytest.mark.skipif(importlib.util.find_spec('onnxruntime') is None
                    or importlib.util.find_spec('onnxscript') is None,
                    reason='onnxruntime / onnxscript not installed (scripts/setup_env.sh)')
@pytest.mark.slow   # 9-24 s of int8 quantisation: full suite only
def test_evaluate_backend_rows_match_torch_and_int8_needs_calibration(setup, tmp_path, capsys):
    """--backend onnxruntime fp32 scores as torch; int8 (calibrated) close; bad uses refused."""
    base = ['evaluate', '--checkpoint', str(setup['ckpt']), '--data', str(setup['data']),
            '--no-odometry', '--no-baselines', '--device', 'cpu']
    scores = {}
    for name, extra in (('torch', []), ('fp32', ['--backend', 'onnxruntime']),
                        ('int8', ['--backend', 'onnxruntime', '--precision', 'int8',
                                  '--calibration', str(setup['data'])])):
        out = tmp_path / f'{name}.json'
        assert cli_main(base + extra + ['--json', str(out)]) == 0
        scores[name] = json.loads(out.read_text())
    assert scores['fp32']['backend'].startswith('onnxruntime fp32')
    assert scores['int8']['backend'].startswith('onnxruntime int8')
    torch_abs_rel = scores['torch']['depth']['abs_rel']
    assert scores['fp32']['depth']['abs_rel'] == pytest.approx(torch_abs_rel, rel=1e-4)
    assert scores['int8']['depth']['abs_rel'] == pytest.approx(torch_abs_rel, abs=0.02)
    capsys.readouterr()
    assert cli_main(base + ['--backend', 'onnxruntime', '--precision', 'int8']) == 2
    assert '--calibration' in capsys.readouterr().err
    assert cli_main(base + ['--precision', 'bf16']) == 2
    assert cli_main(base + ['--backend', 'onnxruntime', '--refine-steps', '1']) == 2
