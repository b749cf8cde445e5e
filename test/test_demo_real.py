"""``fmdepth demo --real``: arguments, node settings, the training cache and the data it finds.

The whole real demo (about 3 minutes of training, then the node over the city frames several
times) is too long for the suite; README.md gives its measured output. Phases b-d run here on a
small untrained checkpoint (``--weights``) over 3 city frames; the parts are also tested where
they live: the clip (test_real_clip.py), the figure (test_figure.py), the bag evaluation
(test_bag_pipeline.py), the training recipe (test_train.py).
"""

import argparse
import json
import os

from fmdepth_ros.checkpoint import build_model, save_checkpoint
from fmdepth_ros.cli import main as cli_main
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.errors import CliError
from fmdepth_ros.ros.tools import demo, demo_real
import pytest
import torch
import yaml


def _args(argv):
    parser = argparse.ArgumentParser()
    demo.configure_parser(parser)
    return parser.parse_args(argv)


def test_help_lists_real(capsys):
    """``fmdepth demo --help`` documents --real and the settings it shares."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(['demo', '--help'])
    assert exit_info.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    assert '--real' in text and 'kitti_cpu.yaml' in text and '--figure-frames' in text
    assert '--synthetic' in text


def test_node_parameters_take_demo_defaults_then_the_users():
    """Refinement is on with the demo's settings; --iterations/--lr/--target override them."""
    assert demo_real.node_parameters(_args(['--real', '--threads', '0'])) == {
        'refine': True, **demo_real.REFINE_DEFAULTS}
    params = demo_real.node_parameters(_args(['--real', '--iterations', '3', '--lr', '2e-4',
                                              '--target', 'all', '--threads', '2']))
    assert params == {'refine': True, 'refine_every': demo_real.REFINE_DEFAULTS['refine_every'],
                      'refine_iterations': 3, 'refine_lr': 2e-4, 'refine_target': 'all',
                      'cpu_threads': 2}


def test_real_by_default_and_synthetic_defaults_stay_with_synthetic():
    """Real footage by default; --synthetic leaves the shared options unset for its defaults."""
    assert _args([]).real and _args(['--real']).real
    with pytest.raises(SystemExit):
        _args(['--real', '--synthetic'])
    args = _args(['--synthetic'])
    assert not args.real and args.passes is None and args.iterations is None
    assert demo.SYNTHETIC_DEFAULTS == {'passes': 4, 'iterations': 8, 'lr': 5e-5,
                                       'target': 'all'}


def test_bad_arguments_fail_before_any_work(tmp_path):
    """Bad --passes, --node-frames, --figure-frames or --weights are one-line errors."""
    from fmdepth_ros.errors import DataError

    out = tmp_path / 'out'
    with pytest.raises(CliError, match='--passes >= 1'):
        demo.run(_args(['--real', '--passes', '0', '--out', str(out)]))
    with pytest.raises(CliError, match='--node-frames >= 3'):
        demo.run(_args(['--real', '--node-frames', '2', '--out', str(out)]))
    with pytest.raises(DataError, match='frame indices'):
        demo.run(_args(['--real', '--figure-frames', 'x', '--out', str(out)]))
    with pytest.raises(CliError, match='weights file not found'):
        demo.run(_args(['--real', '--weights', str(tmp_path / 'none.pt'), '--out', str(out)]))


def test_real_clip_and_recipe_are_found():
    """The demo finds config/kitti_cpu.yaml and both clips of data/ in the source tree."""
    assert os.path.isfile(demo.package_file('config', demo_real.REAL_CONFIG))
    for clip in (demo_real.TRAIN_CLIP, demo_real.EVAL_CLIP):
        assert os.path.isdir(demo.package_file('data', clip))
    with pytest.raises(CliError, match='cannot find'):
        demo.package_file('data', 'no_such_clip')


def test_training_cache_keys_on_parsed_config_and_clip(tmp_path):
    """A checkpoint whose stamp matches the parsed recipe and the clip is reused, untrained."""
    config = demo.package_file('config', demo_real.REAL_CONFIG)
    data = demo.package_file('data', demo_real.TRAIN_CLIP)
    with open(config) as f:
        settings = {'config': yaml.safe_load(f), 'data': demo_real._clip_signature(data)}
    out = tmp_path / 'real_model'
    out.mkdir()
    (out / 'checkpoint.pt').write_bytes(b'cached')
    (out / 'demo_settings.json').write_text(json.dumps(settings))
    logged = []
    path = demo_real.train_real_model(str(out), log=logged.append)
    assert path == str(out / 'checkpoint.pt') and 'reusing' in logged[0]
    assert (out / 'checkpoint.pt').read_bytes() == b'cached'
    assert settings['data'][0][0].startswith('calib') and len(settings['data']) == 203


@pytest.mark.ros
@pytest.mark.slow
def test_phases_b_to_d_on_a_small_checkpoint(tmp_path, capsys):
    """With --weights: the table with baselines, AbsRel per pass of the node, real.png, JSON."""
    torch.manual_seed(0)
    cfg = small_cpu_config()
    save_checkpoint(tmp_path / 'small.pt', build_model(cfg).eval(), cfg)
    out = tmp_path / 'out'
    assert demo.run(_args(['--real', '--weights', str(tmp_path / 'small.pt'), '--out', str(out),
                           '--passes', '2', '--node-frames', '3', '--iterations', '1',
                           '--figure-frames', '0,77'])) == 0
    printed = capsys.readouterr().out
    assert 'untrained' in printed and 'constant' in printed and '2 passes' in printed
    result = json.loads((out / 'real_results.json').read_text())
    assert len(result['node_abs_rel_per_pass']) == 2
    assert all(0 < v < 2 for v in result['node_abs_rel_per_pass'])
    # the checkpoint is itself the untrained network of its config and seed
    assert result['untrained_abs_rel'] == pytest.approx(result['city_abs_rel'])
    assert [row['frame'] for row in result['figure_rows']] == [0, 77]
    assert result['node_parameters']['refine_iterations'] == 1
    assert (out / 'real.png').stat().st_size > 10_000
