"""The two-stage FeatDepth training loop (``fmdepth train`` is its command-line face).

Stage ``feature`` trains the FeatureNet autoencoder (reconstruction + discriminative +
convergent losses, :meth:`FeatDepthModel.feature_losses`); stage ``depth`` trains DepthNet and
PoseNet (photometric + feature-metric + smoothness on frames -1, 0, +1,
:meth:`FeatDepthModel.depth_losses`) with the FeatureNet frozen. One global step counter runs
through both stages.

Resuming is bit-exact: a checkpoint holds the model, optimiser, LR schedule, GradScaler, the
python / numpy / torch RNG states of every rank, and the position in the data order. The data
order is a pure function of (seed, stage, epoch), and each sample's augmentation is drawn from
RNGs seeded by (seed, epoch, sample index) (:class:`SeededDataset`), so neither depends on how
many loader workers ran or where a previous run stopped.
"""

from dataclasses import dataclass
import logging
import math
import os
import random
import re
import shutil
import signal
import time
from typing import Dict, List, Optional, Sequence, Tuple

from fmdepth_ros.atomic_io import open_atomic
from fmdepth_ros.config import Config, save_config
from fmdepth_ros.distributed import (all_gather_objects, any_flag, barrier, broadcast_object,
                                     DistInfo)
from fmdepth_ros.errors import TrainingError
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

LOG = logging.getLogger(__name__)

CHECKPOINT_NAME = 'checkpoint.pt'   # latest state of a run; --resume reads it
#: per-epoch copies of the rolling checkpoint, k = 1-based epoch of the stage
EPOCH_CHECKPOINT_NAMES = {'depth': 'epoch_{}.pt', 'feature': 'feature_epoch_{}.pt'}
TRAINER_STATE_VERSION = 1
STAGES = ('feature', 'depth')


# --------------------------------------------------------------------------- LR schedule
class WarmupStepSchedule:
    """LR factor per optimisation step: linear warm-up, then x``gamma`` at each milestone.

    ``factor(i) = ratio + (1 - ratio) * i / warmup`` for ``i < warmup`` (mmcv's 'linear'
    warm-up used by the official code), times ``gamma ** (#milestones <= i)``. A plain object
    (not a lambda) so ``LambdaLR.state_dict`` stores it.
    """

    def __init__(self, warmup_steps: int, warmup_ratio: float,
                 milestone_steps: Sequence[int], gamma: float = 0.5):
        """Store the schedule; milestones are in optimisation steps of the stage."""
        self.warmup_steps = int(warmup_steps)
        self.warmup_ratio = float(warmup_ratio)
        self.milestone_steps = [int(m) for m in milestone_steps]
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        """Return the multiplier of the base LR at stage step ``step`` (0-based)."""
        factor = 1.0
        if step < self.warmup_steps:
            factor = self.warmup_ratio + (1.0 - self.warmup_ratio) * step / self.warmup_steps
        passed = sum(1 for m in self.milestone_steps if step >= m)
        return factor * self.gamma ** passed


# --------------------------------------------------------------------------- data order
class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start part-way into an epoch (for ``--resume``).

    The epoch's order is the parent's (a permutation seeded by ``seed + epoch``, sharded
    ``rank::num_replicas``); :meth:`set_position` skips the samples already trained on.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        """Shard ``dataset`` for ``rank`` of ``num_replicas``; no process group needed."""
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.skip = 0

    def set_position(self, epoch: int, skip_samples: int) -> None:
        """Iterate epoch ``epoch`` starting after its first ``skip_samples`` samples."""
        self.set_epoch(epoch)
        self.skip = int(skip_samples)

    def __iter__(self):
        """Iterate this rank's shard of the epoch, minus the skipped head."""
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        """Return the number of samples left in this epoch for this rank."""
        return max(0, self.num_samples - self.skip)


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededDataset(Dataset):
    """Wraps a dataset so each sample's random augmentation depends only on (seed, epoch, index).

    python ``random``, numpy's global RNG and torch's CPU RNG are seeded per sample and restored
    afterwards, so loading data never disturbs the training RNG (dropout), and the same sample
    gets the same augmentation whether it is loaded in the main process, in a worker, or after a
    resume.
    """

    def __init__(self, dataset: Dataset, seed: int):
        """Wrap ``dataset``; ``seed`` is the run's seed."""
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        """Return the length of the wrapped dataset."""
        return len(self.dataset)

    def __getitem__(self, index: int):
        """Return sample ``index`` of the wrapped dataset under per-sample seeded RNGs."""
        seed = _item_seed(self.seed, self.epoch, int(index))
        py_state = random.getstate()
        np_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                np.random.seed(seed)
                torch.manual_seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _worker_init(_worker_id: int) -> None:
    """Loader workers ignore Ctrl-C: the main process handles it and saves a checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict:
    """RNG states of python, numpy, torch CPU (and the current CUDA device) as plain values."""
    np_state = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'].cpu())


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- helpers
class StageLoss(nn.Module):
    """``forward(batch)`` = the stage's loss, so DistributedDataParallel can wrap it.

    DDP only synchronises gradients of computations run through its ``forward``; the model's
    loss methods are therefore called from here rather than directly.
    """

    def __init__(self, model: nn.Module, stage: str):
        """``stage``: 'feature' (FeatureNet losses) or 'depth' (DepthNet + PoseNet losses)."""
        super().__init__()
        self.model = model
        self.stage = stage

    def forward(self, batch: Dict[str, torch.Tensor]):
        """Return ``(total loss [], logs {name: float}, outputs dict)``."""
        if self.stage == 'feature':
            return self.model.feature_losses(batch)
        return self.model.depth_losses(batch)


def stage_modules(model: nn.Module, stage: str) -> Tuple[List[nn.Module], List[nn.Module]]:
    """(trained modules, frozen modules) of ``stage``."""
    if stage == 'feature':
        return [model.feature_net], [model.depth_net, model.pose_net]
    return [model.depth_net, model.pose_net], [model.feature_net]


def set_stage_mode(model: nn.Module, stage: str) -> None:
    """Train mode for the stage's networks; frozen networks in eval mode (fixed BN statistics).

    The official code leaves the frozen FeatureNet in train mode (batch statistics); we freeze
    it fully so its features are a fixed function of the image, as the paper describes.
    """
    model.train()    # the model's own flag matters too (e.g. auto-mask tie-breaking noise)
    _, frozen = stage_modules(model, stage)
    for module in frozen:
        module.eval()


def freeze_for_stage(model: nn.Module, stage: str) -> List[nn.Parameter]:
    """Set ``requires_grad`` for ``stage`` and return the trained parameters in a fixed order."""
    trained, frozen = stage_modules(model, stage)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    params = []
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def batch_to_device(batch: Dict, device: str) -> Dict:
    """Move every tensor of a collated batch to ``device`` (non-blocking for pinned memory)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
            for k, v in batch.items()}


def colorize(image: torch.Tensor, cmap: str = 'magma') -> np.ndarray:
    """Colour-map a single-channel map ``[1,H,W]`` or ``[H,W]`` -> ``[3,H,W]`` float in [0, 1].

    Values are normalised by their 95th percentile (the usual disparity display).
    """
    from matplotlib import colormaps
    x = image.detach().float().cpu().numpy().reshape(image.shape[-2:])
    top = float(np.percentile(x, 95)) if x.size else 1.0
    x = np.clip(x / max(top, 1e-6), 0.0, 1.0)
    rgb = colormaps[cmap](x)[..., :3]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32)


def batch_abs_rel(depth: torch.Tensor, depth_gt: torch.Tensor, max_depth: float = 80.0):
    """Median-scaled AbsRel of predicted ``depth`` [B,1,H,W] vs ``depth_gt`` (0 = invalid).

    A cheap learning-curve signal for data with ground truth (synthetic sequences); the
    evaluation protocol proper is ``fmdepth evaluate``. Returns None without valid pixels.
    """
    values = []
    for pred, gt in zip(depth.float(), depth_gt.float()):
        mask = (gt > 1e-3) & (gt < max_depth)
        if not bool(mask.any()):
            continue
        p, g = pred[mask], gt[mask]
        p = (p * (g.median() / p.median().clamp_min(1e-9))).clamp(1e-3, max_depth)
        values.append(float(((p - g).abs() / g).mean()))
    return float(np.mean(values)) if values else None


@dataclass
class StagePlan:
    """One stage of a run: ``steps`` optimisation steps starting at global step ``start``."""

    name: str
    start: int
    steps: int

    @property
    def end(self) -> int:
        """Global step at which the stage is complete."""
        return self.start + self.steps


def plan_stages(stage: str, steps_per_epoch: int, cfg: Config,
                feature_steps: Optional[int]) -> List[StagePlan]:
    """Stage list for ``stage`` in 'feature' | 'depth' | 'both' (global step ranges)."""
    if stage not in ('feature', 'depth', 'both'):
        raise TrainingError(f'unknown stage {stage!r} (feature, depth or both)')
    n_feature = feature_steps if feature_steps is not None else cfg.train.feature_steps
    if n_feature is None:
        n_feature = cfg.train.feature_epochs * steps_per_epoch
    n_depth = cfg.train.depth_steps
    if n_depth is None:
        n_depth = cfg.train.epochs * steps_per_epoch
    plans = []
    if stage in ('feature', 'both'):
        plans.append(StagePlan('feature', 0, int(n_feature)))
    if stage in ('depth', 'both'):
        start = plans[-1].end if plans else 0
        plans.append(StagePlan('depth', start, int(n_depth)))
    return plans


def stage_milestones(stage: str, cfg: Config, steps_per_epoch: int) -> List[int]:
    """LR milestones of a stage in its own optimisation steps.

    Depth stage: ``cfg.train.lr_milestones`` epochs (paper: 20, 30 of 40). Feature stage: the
    official autoencoder schedule (steps at epochs 10, 20 of 30) scaled to
    ``cfg.train.feature_epochs``.
    """
    if stage == 'depth':
        epochs = cfg.train.lr_milestones
        if cfg.train.depth_steps is not None:
            # milestones keep their place in the schedule (e.g. 20/40, 30/40 of the stage)
            fraction = cfg.train.depth_steps / max(cfg.train.epochs, 1)
            return [int(e * fraction) for e in epochs if e > 0]
    else:
        n = cfg.train.feature_epochs
        epochs = (round(n / 3), round(2 * n / 3))
    return [int(e * steps_per_epoch) for e in epochs if e > 0]


# --------------------------------------------------------------------------- precision
NETWORK_DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
PRECISIONS = ('fp32', 'bf16', 'fp16', 'auto')
#: bf16 must beat fp32 by this factor to be chosen by ``precision: auto``
AUTO_BF16_MARGIN = 1.15


def resolve_precision(precision: str, amp: bool, device: str) -> str:
    """Network precision of a run: 'fp32', 'bf16', 'fp16', or 'auto' (measured on the CPU).

    ``amp: true`` (the older key) means fp16 on CUDA. ``auto`` is fp16 on CUDA; on the CPU
    it is decided by timing one training step in fp32 and in bf16 (:meth:`Trainer.
    _choose_precision`), never by CPU flags: a CPU may report bf16 and still run it slower.
    """
    if precision not in PRECISIONS:
        raise TrainingError(f'train.precision must be one of {", ".join(PRECISIONS)}, '
                            f'got {precision!r}')
    cuda = device.startswith('cuda')
    if precision == 'fp16' and not cuda:
        raise TrainingError('train.precision fp16 needs CUDA (use bf16 or auto on the CPU)')
    if precision == 'auto':
        return 'fp16' if cuda else 'auto'
    if precision == 'fp32' and amp and cuda:
        return 'fp16'
    return precision


def time_training_step(net, batch, model, stage: str, repeats: int = 2) -> float:
    """Best wall time (s) of a forward + backward pass of ``net(batch)``, weights untouched.

    Gradients are cleared afterwards and BatchNorm statistics restored, so timing leaves
    the run exactly as it was.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]   # BatchNorm statistics
    rng = torch.get_rng_state()
    best = float('inf')
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        total, _, _ = net(batch)
        total.backward()
        if attempt:                                # the first pass warms up
            best = min(best, time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for buffer, saved in buffers:
            buffer.copy_(saved)
    torch.set_rng_state(rng)
    return best


# --------------------------------------------------------------------------- trainer
class Trainer:
    """Runs (and resumes) the FeatureNet and DepthNet+PoseNet stages on one dataset.

    Args:
        cfg: configuration (``cfg.train`` holds the optimisation settings).
        dataset: training dataset yielding the architecture's sample format
            (``images`` / ``images_aug`` ``[F,3,H,W]``, ``K`` ``[3,3]``).
        out_dir: run directory (``checkpoint.pt``, ``config.yaml``, ``tb/``).
        dist: process placement (:func:`fmdepth_ros.distributed.init_distributed`).
        stage: 'feature', 'depth' or 'both'.
        max_steps: stop after this global step (default: the end of the last stage).
        feature_steps: length of the feature stage (default: ``cfg.train.feature_steps`` or
            ``feature_epochs`` epochs).
        resume: continue from ``out_dir/checkpoint.pt`` (stage plan and config come from it).
        init_checkpoint: start from the weights of another checkpoint (not its optimiser).
        log_every, checkpoint_every, image_every: intervals in global steps (0 disables).
        progress: show a tqdm progress bar (rank 0 only).
        find_unused_parameters: passed to DistributedDataParallel.
    """

    def __init__(self, cfg: Config, dataset: Dataset, out_dir: str,
                 dist: Optional[DistInfo] = None,
                 stage: str = 'both', max_steps: Optional[int] = None,
                 feature_steps: Optional[int] = None, resume: bool = False,
                 init_checkpoint: Optional[str] = None, log_every: Optional[int] = None,
                 checkpoint_every: Optional[int] = None, image_every: Optional[int] = None,
                 progress: bool = True, find_unused_parameters: bool = False):
        """Build the model (or restore it from the run directory) and plan the stages."""
        from fmdepth_ros import checkpoint as ckpt_mod

        self.dist = dist or DistInfo()
        self.out_dir = out_dir
        self.checkpoint_path = os.path.join(out_dir, CHECKPOINT_NAME)
        self.device = self.dist.device
        self.progress = progress
        self.find_unused_parameters = find_unused_parameters
        self.stop_requested = False
        self._writer = None
        self._resume_state = None

        if resume:
            if not os.path.isfile(self.checkpoint_path):
                raise TrainingError(f'--resume: no checkpoint at {self.checkpoint_path}')
            model, cfg, info = ckpt_mod.load_checkpoint(self.checkpoint_path, map_location='cpu')
            extra = info.get('extra') or {}
            state = extra.get('trainer')
            if not state or state.get('version') != TRAINER_STATE_VERSION:
                raise TrainingError(f'{self.checkpoint_path}: not a resumable training checkpoint')
            if state['world_size'] != self.dist.world_size:
                raise TrainingError(
                    f'{self.checkpoint_path} was written by {state["world_size"]} process(es); '
                    f'resume with the same number (got {self.dist.world_size})')
            state['optimizer'] = info.get('optimizer')
            self._resume_state = state
            self._resumed_precision = state.get('precision')
            self.step = int(info.get('step', state['step']))
        else:
            seed_everything(cfg.train.seed)     # identical initial weights on every rank
            model = ckpt_mod.build_model(cfg)
            if init_checkpoint:
                init_model, _, _ = ckpt_mod.load_checkpoint(init_checkpoint, map_location='cpu')
                model.load_state_dict(init_model.state_dict())
            self.step = 0
        self.cfg = cfg
        self.model = model.to(self.device)

        self.batch_size = int(cfg.train.batch_size)
        self.dataset = SeededDataset(dataset, cfg.train.seed)
        per_rank = math.ceil(len(dataset) / self.dist.world_size)
        self.steps_per_epoch = per_rank // self.batch_size
        if self.steps_per_epoch < 1:
            raise TrainingError(
                f'dataset has {len(dataset)} samples: fewer than one batch of '
                f'{self.batch_size} per process ({self.dist.world_size} process(es))')

        if self._resume_state is not None:
            st = self._resume_state
            if st['steps_per_epoch'] != self.steps_per_epoch:
                raise TrainingError(
                    f'{self.checkpoint_path}: the dataset changed ({st["steps_per_epoch"]} '
                    f'batches per epoch then, {self.steps_per_epoch} now)')
            self.plans = [StagePlan(**p) for p in st['plans']]
        else:
            self.plans = plan_stages(stage, self.steps_per_epoch, cfg, feature_steps)
            if stage == 'depth' and not init_checkpoint and self.dist.is_main:
                LOG.warning('--stage depth without --init: the frozen FeatureNet is untrained '
                            '(random features for the feature-metric loss)')
        last = self.plans[-1].end
        self.max_steps = last if max_steps is None else min(int(max_steps), last)

        self.log_every = cfg.train.log_every if log_every is None else log_every
        self.checkpoint_every = (cfg.train.checkpoint_every if checkpoint_every is None
                                 else checkpoint_every)
        self.image_every = image_every if image_every is not None else max(self.log_every, 1) * 25
        self.precision = resolve_precision(cfg.train.precision, cfg.train.amp, self.device)
        if resume and getattr(self, '_resumed_precision', None):
            self.precision = self._resumed_precision    # what ``auto`` chose before
        self.amp = self.precision == 'fp16'     # GradScaler for fp16 networks
        self._precision_applied = False          # set by the first training step
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.images_seen = 0

    # ----------------------------------------------------------------- public
    def request_stop(self, *_args) -> None:
        """Ask the loop to save a checkpoint and return after the current step (signal-safe)."""
        self.stop_requested = True

    def run(self) -> str:
        """Train until ``max_steps`` or a stop request; returns 'done' or 'interrupted'."""
        if self.dist.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
            save_config(self.cfg, os.path.join(self.out_dir, 'config.yaml'))
        barrier(self.dist)
        if self._resume_state is None:
            # Per-rank training RNG (dropout): distinct streams, reproducible.
            seed_everything(self.cfg.train.seed + 1000003 * (self.dist.rank + 1))
        else:
            restore_rng_state(self._resume_state['rng'][self.dist.rank])
        fresh = self._resume_state is None
        try:
            ran = False
            for plan in self.plans:
                if self.step >= min(plan.end, self.max_steps):
                    continue
                ran = True
                outcome = self._run_stage(plan)
                if outcome == 'interrupted':
                    return outcome
            if fresh and not ran:
                self._run_stage(self.plans[0])   # --max-steps 0: checkpoint of the initial model
            return 'done'
        finally:
            if self._writer is not None:
                self._writer.close()

    # ----------------------------------------------------------------- stage
    def _build_optim(self, plan: StagePlan):
        params = freeze_for_stage(self.model, plan.name)
        tcfg = self.cfg.train
        optimizer = torch.optim.Adam(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        schedule = WarmupStepSchedule(tcfg.warmup_steps, tcfg.warmup_ratio,
                                      stage_milestones(plan.name, self.cfg, self.steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        scaler = torch.amp.GradScaler('cuda', enabled=self.amp)
        state = self._resume_state
        if state is not None and state['stage'] == plan.name:
            optimizer.load_state_dict(state['optimizer'])
            scheduler.load_state_dict(state['scheduler'])
            if state.get('scaler'):
                scaler.load_state_dict(state['scaler'])
        return params, optimizer, scheduler, scaler

    def _make_loader(self, sampler):
        tcfg = self.cfg.train
        generator = torch.Generator()
        generator.manual_seed(tcfg.seed)   # loader's own seed draws never touch the global RNG
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler,
                          num_workers=tcfg.num_workers, drop_last=True,
                          pin_memory=self.device.startswith('cuda'),
                          worker_init_fn=_worker_init if tcfg.num_workers > 0 else None,
                          generator=generator)

    def _run_stage(self, plan: StagePlan) -> str:
        params, optimizer, scheduler, scaler = self._build_optim(plan)
        self._resume_state = None    # only the first stage run after a resume restores state
        loss_module = StageLoss(self.model, plan.name)
        net = loss_module
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            device_ids = [self.dist.local_rank] if self.device.startswith('cuda') else None
            net = DDP(loss_module, device_ids=device_ids,
                      find_unused_parameters=self.find_unused_parameters)
        sampler = ResumableSampler(self.dataset, self.dist.world_size, self.dist.rank,
                                   seed=self.cfg.train.seed + STAGES.index(plan.name))
        loader = self._make_loader(sampler)
        end = min(plan.end, self.max_steps)
        bar = self._progress_bar(plan, end)
        last_time = time.perf_counter()
        rate = None
        try:
            while self.step < end:
                epoch, batch_in_epoch = divmod(self.step - plan.start, self.steps_per_epoch)
                sampler.set_position(epoch, batch_in_epoch * self.batch_size)
                self.dataset.epoch = epoch
                for batch in loader:
                    logs = self._train_step(net, plan, batch, params, optimizer, scheduler,
                                            scaler)
                    self.step += 1
                    now = time.perf_counter()
                    images = self.batch_size * self.dist.world_size
                    inst = images / max(now - last_time, 1e-9)
                    rate = inst if rate is None else 0.9 * rate + 0.1 * inst
                    last_time = now
                    self._log(plan, logs, optimizer, rate, batch, bar)
                    stop = any_flag(self.dist, self.stop_requested)
                    if stop:
                        self._save(plan, optimizer, scheduler, scaler)
                        return 'interrupted'
                    epoch_done = (self.step - plan.start) % self.steps_per_epoch == 0
                    if epoch_done and self.cfg.train.keep_epoch_checkpoints > 0:
                        self._save(plan, optimizer, scheduler, scaler)
                        self._keep_epoch_copy(plan, (self.step - plan.start)
                                              // self.steps_per_epoch)
                        if self.step >= end:
                            return 'done'
                    if self.step >= end:
                        break
                    if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                        self._save(plan, optimizer, scheduler, scaler)
            self._save(plan, optimizer, scheduler, scaler)
            return 'done'
        finally:
            if bar is not None:
                bar.close()

    def _choose_precision(self, net, plan, batch) -> None:
        """Resolve ``precision: auto`` by timing both candidates on the first batch."""
        if self.precision != 'auto':
            self.model.set_network_precision(self.device.split(':')[0],
                                             NETWORK_DTYPES[self.precision])
            return
        times = {}
        for name in ('fp32', 'bf16'):
            self.model.set_network_precision('cpu', NETWORK_DTYPES[name])
            times[name] = time_training_step(net, batch, self.model, plan.name)
        choice = 'bf16' if times['bf16'] * AUTO_BF16_MARGIN < times['fp32'] else 'fp32'
        self.precision = broadcast_object(self.dist, choice)    # every rank: rank 0's timing
        self.model.set_network_precision('cpu', NETWORK_DTYPES[self.precision])
        if self.dist.is_main:
            LOG.info('precision auto: %s (one training step: fp32 %.0f ms, bf16 %.0f ms)',
                     self.precision, 1000 * times['fp32'], 1000 * times['bf16'])

    def _train_step(self, net, plan, batch, params, optimizer, scheduler, scaler) -> Dict:
        batch = batch_to_device(batch, self.device)
        set_stage_mode(self.model, plan.name)
        if not self._precision_applied:
            self._choose_precision(net, plan, batch)
            self._precision_applied = True
        total, logs, outputs = net(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        if self.amp or torch.isfinite(norm):
            scaler.step(optimizer)      # GradScaler itself skips steps with inf/NaN gradients
        else:
            LOG.warning('step %d: non-finite gradient norm, update skipped', self.step)
        scaler.update()
        scheduler.step()
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs['total'] = float(total.detach())
        logs['grad_norm'] = float(norm)
        if ('depth', 0) in outputs and 'depth_gt' in batch and self.log_every \
                and (self.step + 1) % self.log_every == 0:
            abs_rel = batch_abs_rel(outputs[('depth', 0)].detach(), batch['depth_gt'])
            if abs_rel is not None:
                logs['gt_abs_rel'] = abs_rel
        return logs

    # ----------------------------------------------------------------- logging
    def _progress_bar(self, plan: StagePlan, end: int):
        if not (self.progress and self.dist.is_main):
            return None
        from tqdm import tqdm
        return tqdm(total=end - plan.start, initial=self.step - plan.start,
                    desc=f'{plan.name} stage', unit='step', dynamic_ncols=True)

    def _tb(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(os.path.join(self.out_dir, 'tb'),
                                         purge_step=self.step)
        return self._writer

    def _log(self, plan, logs, optimizer, rate, batch, bar) -> None:
        if not self.dist.is_main:
            return
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f'{logs["total"]:.4f}', img_s=f'{rate:.1f}')
        if self.log_every and self.step % self.log_every == 0:
            tb = self._tb()
            for key, value in logs.items():
                tb.add_scalar(f'{plan.name}/{key}', value, self.step)
            tb.add_scalar(f'{plan.name}/lr', optimizer.param_groups[0]['lr'], self.step)
            tb.add_scalar('speed/images_per_s', rate, self.step)
        if self.image_every and self.step % self.image_every == 0:
            self._log_images(plan, batch)

    @torch.no_grad()
    def _log_images(self, plan, batch) -> None:
        """Log the target image and its disparity (depth stage) or reconstruction (feature).

        Networks run in eval mode: no dropout RNG draw and no BN statistic update, so logging
        never changes the training trajectory.
        """
        image = batch['images'][:1, 0].to(self.device)   # [1,3,H,W]
        tb = self._tb()
        tb.add_image(f'{plan.name}/image', image[0].float().cpu().clamp(0, 1), self.step)
        net = self.model.depth_net if plan.name == 'depth' else self.model.feature_net
        was_training = net.training
        net.eval()
        try:
            out = net(image)
        finally:
            net.train(was_training)
        if plan.name == 'depth':
            tb.add_image('depth/disparity', colorize(out[0][0]), self.step)
        else:
            tb.add_image('feature/reconstruction', out[('recon', 0)][0].float().cpu().clamp(0, 1),
                         self.step)

    # ----------------------------------------------------------------- checkpoint
    def _keep_epoch_copy(self, plan, epoch: int) -> None:
        """Copy the rolling checkpoint to ``epoch_<epoch>.pt``; keep the newest N copies.

        Each copy is a complete, resumable checkpoint of the end of that epoch (the paper's
        model is chosen by epoch: the official M run peaked around epoch 14 of 40).
        """
        if not self.dist.is_main:
            return
        pattern = EPOCH_CHECKPOINT_NAMES[plan.name]
        with open(self.checkpoint_path, 'rb') as src, \
                open_atomic(os.path.join(self.out_dir, pattern.format(epoch)), 'wb') as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
        regex = re.compile('^' + re.escape(pattern).replace(r'\{\}', r'(\d+)') + '$')
        kept = sorted((int(m.group(1)), name) for name in os.listdir(self.out_dir)
                      for m in [regex.match(name)] if m)
        for _, name in kept[:-self.cfg.train.keep_epoch_checkpoints]:
            os.remove(os.path.join(self.out_dir, name))

    def _save(self, plan, optimizer, scheduler, scaler) -> None:
        from fmdepth_ros import checkpoint as ckpt_mod
        rngs = all_gather_objects(self.dist, capture_rng_state())
        if self.dist.is_main:
            trainer_state = {
                'version': TRAINER_STATE_VERSION,
                'step': self.step,
                'stage': plan.name,
                'plans': [vars(p).copy() for p in self.plans],
                'scheduler': scheduler.state_dict(),
                'scaler': scaler.state_dict(),
                'rng': rngs,
                'world_size': self.dist.world_size,
                'steps_per_epoch': self.steps_per_epoch,
                'precision': self.precision,
            }
            ckpt_mod.save_checkpoint(self.checkpoint_path, self.model, self.cfg, step=self.step,
                                     optimizer=optimizer, extra={'trainer': trainer_state})
        barrier(self.dist)


__all__ = ['Trainer', 'TrainingError', 'WarmupStepSchedule', 'ResumableSampler',
           'SeededDataset', 'StageLoss', 'StagePlan', 'plan_stages', 'stage_milestones',
           'capture_rng_state', 'restore_rng_state', 'seed_everything', 'colorize',
           'batch_abs_rel', 'CHECKPOINT_NAME']
