"""A small model trained once per test session, like phase a of ``fmdepth demo``.

``fmdepth synth`` renders 40 frames (96x64) of the synthetic corridor seed 0 and ``fmdepth
train`` trains ``config/synthetic_cpu.yaml`` (ResNet-18, Monodepth2 decoder) on them: 10
FeatureNet steps, then DepthNet + PoseNet up to step 160 (self-supervised, no ground truth).
The learning proof (test_learning.py) evaluates it; the node's refinement test starts from it.
"""

from dataclasses import asdict, dataclass
import json
import os
import resource
import time

from filelock import FileLock
from fmdepth_ros.atomic_io import write_json_atomic
from fmdepth_ros.ros.tools.demo import train_small_model
import torch

TRAIN_SEED = 0
TRAIN_FRAMES = 40
MAX_STEPS = 160


@dataclass
class TrainedModel:
    """Where the checkpoint is and what the training cost."""

    checkpoint: str
    wall_seconds: float
    cpu_seconds: float
    threads: int


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_model(out_dir):
    """Train the demo model into ``out_dir`` on one torch thread; a :class:`TrainedModel`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # robust on a shared machine; ~2 min CPU in all
    try:
        start, cpu_start = time.time(), _cpu_seconds()
        checkpoint = train_small_model(str(out_dir), TRAIN_SEED, TRAIN_FRAMES, MAX_STEPS,
                                       retrain=True, log=lambda *_: None)
        return TrainedModel(checkpoint, time.time() - start, _cpu_seconds() - cpu_start, 1)
    finally:
        torch.set_num_threads(threads)


def shared_trained_model(tmp_path_factory):
    """Train once per session; pytest-xdist workers share the one run (a file lock).

    The workers' temporary folders have one parent; the first worker to take the lock trains,
    the others wait and read its record.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        root = root.parent
    record = root / 'trained_model.json'
    with FileLock(str(root / 'trained_model.lock')):
        if record.is_file():
            return TrainedModel(**json.loads(record.read_text()))
        model = train_model(root / 'trained_model')
        write_json_atomic(str(record), asdict(model))
        return model
