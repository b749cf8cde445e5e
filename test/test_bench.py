"""Tests of ``fmdepth bench`` (tiny sizes on the CPU; no speed goal is asserted)."""

import json

from fmdepth_ros.cli import main
from fmdepth_ros.errors import CliError
from fmdepth_ros.networks.depth_net import DepthNet
from fmdepth_ros.runtime import benchmark as bench
from fmdepth_ros.runtime.inference import DepthPredictor
import numpy as np
import pytest
import torch


@pytest.mark.slow
@pytest.mark.ros
def test_bench_cli_prints_table_and_writes_json(tmp_path, capsys):
    """A tiny CPU run prints every row and writes every documented JSON field."""
    out = tmp_path / 'bench.json'
    code = main(['bench', '--device', 'cpu', '--frames', '5', '--warmup', '1',
                 '--sizes', '192x64', '--encoders', '18', '--node-frames', '2',
                 '--node-sizes', '192x64,250x90',
                 '--refine-frames', '2', '--refine-iterations', '1', '--threads', '1',
                 '--json', str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert 'median ms' in text and 'p99 ms' in text and 'frames/s' in text
    assert '(a) eager' in text and '(b) optim' in text and 'RSS MiB first/last' in text
    assert 'node end-to-end' in text and 'online refinement' in text

    data = json.loads(out.read_text())
    assert data['device'] == 'cpu' and data['frames'] == 5
    assert data['optimised_options']['cuda_graphs'] is False
    (row,) = data['models']
    assert row['size'] == '192x64' and row['encoder'] == 18
    for key in ('eager', 'optimised'):
        r = row[key]
        assert r['frames'] == 5
        assert 0 < r['median_ms'] <= r['p99_ms']
        assert r['fps'] > 0 and r['memory_kind'] == 'cpu_rss'
        assert r['memory_first_mb'] > 0 and r['memory_last_mb'] > 0
    assert row['speedup'] > 0
    assert 0 <= row['max_rel_depth_diff'] < 0.05   # bf16 or fp32 vs eager fp32

    node = data['node']
    if 'skipped' not in node:   # rclpy is part of this project's environment
        assert node['frames'] == 2 and 0 < node['median_ms'] <= node['p99_ms']
        assert 'node stages' in text and 'overhead (e2e-network)' in text
        rows = data['node_overhead']
        assert [r['camera_size'] for r in rows] == ['192x64', '250x90']
        assert node is not rows[0] and node == rows[0]      # the network-size camera row
        for r in rows:
            assert r['size'] == '192x64' and r['frames'] == 2
            stages = r['stages']
            for name in ('transport_in', 'handoff', 'convert', 'preprocess', 'network',
                         'postprocess', 'scale_nan_mask', 'depth_msg', 'depth_publish',
                         'camera_info_copy', 'transport_out', 'pose_network'):
                assert stages[name]['wall_ms'] >= 0, name
            assert stages['pose_network']['after_publish']
            assert not stages['network']['after_publish']
            assert 0 < r['network_ms'] < r['median_ms']
            assert r['overhead_ms'] > 0
            assert data['node_overhead_ms_by_size'][r['camera_size']] == r['overhead_ms']
        assert data['node_overhead_ms'] == rows[0]['overhead_ms']
        assert data['node_overhead_subtracted_ms'] is not None
    ref = data['refinement']
    assert ref['windows'] >= 1 and ref['iterations_per_s'] > 0
    assert ref['errors'] == 0, ref['last_error']
    assert ref['inference_alone']['median_ms'] > 0 and ref['inference_during']['frames'] >= 2


@pytest.mark.parametrize('argv, message', [
    (['--sizes', '100x50'], 'multiples of 32'),
    (['--sizes', '640by192'], 'not WxH'),
    (['--encoders', '19'], 'not one of 18, 34, 50'),
    (['--frames', '0'], '--frames must be >= 1'),
    (['--device', 'tpu'], 'unknown device'),
    (['--json', '/nonexistent-dir/x.json'], 'does not exist'),
])
def test_bench_bad_arguments_give_one_line_errors(argv, message, capsys):
    """Bad arguments exit with code 2 and a one-line message, before any benchmarking."""
    assert main(['bench', '--device', 'cpu'] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and '\n' not in err


def test_parsers():
    """Size and encoder lists parse to (W, H) tuples and ints."""
    assert bench.parse_sizes('640x192, 1024X320') == [(640, 192), (1024, 320)]
    assert bench.parse_camera_sizes('640x192,1242x375,640x192') == [(640, 192), (1242, 375)]
    for bad in ('1242', '4x4', 'axb'):
        with pytest.raises(CliError, match='--node-sizes'):
            bench.parse_camera_sizes(bad)
    assert bench.parse_encoders('18,50') == [18, 50]
    with pytest.raises(CliError):
        bench.parse_encoders('x')


def test_eager_reference_matches_fp32_predictor():
    """The eager reference and the fp32 optimised path compute the same depth."""
    torch.set_num_threads(1)
    cfg = bench.bench_config(192, 64, 18, 'cpu')
    torch.manual_seed(0)
    net = DepthNet(18).eval()
    images, K = bench.sample_frames(192, 64, count=2)
    assert images[0].shape == (64, 192, 3) and K.shape == (3, 3)
    fp32 = DepthPredictor(net, cfg)
    eager = bench.EagerReference(net, cfg, 'cpu')
    assert bench.max_relative_difference(eager.predict, fp32.predict, images) < 1e-5
    big = np.ascontiguousarray(np.repeat(np.repeat(images[0], 2, 0), 2, 1))   # resize path
    assert bench.max_relative_difference(eager.predict, fp32.predict, [big]) < 1e-5


@pytest.mark.slow
def test_bench_backend_all_compares_every_backend_side_by_side(tmp_path, capsys):
    """``--backend all``: one row per candidate, eager fp32 first; JSON median_ms + speedup."""
    out = tmp_path / 'bench.json'
    code = main(['bench', '--device', 'cpu', '--frames', '3', '--warmup', '1',
                 '--sizes', '192x64', '--encoders', '18', '--node-frames', '0',
                 '--refine-frames', '0', '--threads', '1', '--backend', 'all',
                 '--json', str(out)])
    text = capsys.readouterr().out
    assert code == 0 and 'backends side by side' in text and 'x eager' in text
    (backends,) = json.loads(out.read_text())['backends']
    rows = backends['rows']
    assert list(rows)[0] == 'eager fp32' and rows['eager fp32']['speedup'] == 1.0
    assert 'unavailable' in rows['tensorrt fp32'] or torch.cuda.is_available()
    measured = {k: r for k, r in rows.items() if 'unavailable' not in r}
    assert {'torch fp32', 'torch fp32 channels_last'} <= set(measured)
    for name, row in measured.items():
        assert row['median_ms'] > 0 and row['speedup'] > 0, name
        limit = 1e-3 if ' fp32' in name else 0.05
        assert row['max_rel_depth_diff'] < limit, (name, row['max_rel_depth_diff'])
    for name in ('onnxruntime fp32', 'openvino fp32'):
        if name in measured:    # an ONNX engine: the refit delay is measured
            assert measured[name]['swap_s'] > 0


def test_stage_timer_records_stages_events_and_cpu_time():
    """Stages add up per frame in order; marks outside a frame are ignored."""
    import time
    from fmdepth_ros.runtime.stage_timer import StageTimer
    timer = StageTimer()
    timer.mark('ignored')            # no frame begun: nothing recorded, no error
    start = time.perf_counter()
    timer.begin(7, start=start - 0.002)
    timer.mark('handoff')
    sum(range(20000))
    timer.mark('work')
    timer.event('published')
    timer.mark('work')               # the same name again adds up
    timer.end()
    timer.mark('after_end')
    record = timer.frame(7)
    assert record['order'] == ['handoff', 'work']
    assert record['wall_ms']['handoff'] >= 2.0
    assert record['cpu_ms']['work'] > 0 and record['wall_ms']['work'] > 0
    assert start < record['events']['published'] <= time.perf_counter()
    assert timer.frame(8) is None


def test_node_overhead_summary_uses_the_network_size_row():
    """The summary picks the camera row at the network size and the old estimate from it."""
    rows = [{'camera_size': '1242x375', 'size': '640x192', 'overhead_ms': 9.0,
             'median_ms': 210.0},
            {'camera_size': '640x192', 'size': '640x192', 'overhead_ms': 4.0,
             'median_ms': 200.0}]
    result = {'node_overhead': rows, 'models': [{'optimised': {'median_ms': 190.0}}]}
    out = bench.node_overhead_summary(result)
    assert out['node'] is rows[1] and out['node_overhead_ms'] == 4.0
    assert out['node_overhead_ms_by_size'] == {'1242x375': 9.0, '640x192': 4.0}
    assert out['node_overhead_subtracted_ms'] == 10.0
    assert bench.node_overhead_summary({'node_overhead': [{'skipped': 'x'}]})['node'] == {
        'skipped': 'x'}
