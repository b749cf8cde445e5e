"""Online refinement: a few self-supervised Adam steps on recent frames (paper section 3, "M*").

Two entry points, both ROS-free:

* :func:`refine_on_batch` runs ``iterations`` Adam steps of ``model.depth_losses`` (photometric +
  feature-metric + smoothness) on one batch, in place, and with ``guard=True`` restores the initial
  weights when the loss measured after the steps is worse or not finite. ``fmdepth evaluate
  --refine-steps`` and :class:`OnlineRefiner` use it.
* :class:`OnlineRefiner` owns a background thread that refines its **own deep copy** of the model
  on windows of recent frames, and hands improved weights to the inference copy through a
  callback. The caller's inference path never waits for it: :meth:`OnlineRefiner.submit` only
  appends to a bounded queue that drops the oldest window.

The FeatureNet is always frozen (official ``cfg_kitti_fm_refine``); ``target='decoder'`` refines
the depth decoder only, ``target='all'`` the whole DepthNet and the PoseNet.
"""

import copy
import logging
import math
import threading
import time

from fmdepth_ros.runtime.worker import BoundedWorker
import numpy as np
import torch

LOGGER = logging.getLogger(__name__)

TARGETS = ('decoder', 'all')
BATCHNORM_MODES = ('eval', 'train')


def refined_modules(model, target):
    """Return the sub-modules of ``model`` that ``target`` ('decoder' | 'all') updates."""
    if target not in TARGETS:
        raise ValueError(f'refinement target must be one of {TARGETS}, got {target!r}')
    if target == 'all':
        return [model.depth_net, model.pose_net]
    for name in ('decoder', 'depth_decoder'):
        module = getattr(model.depth_net, name, None)
        if isinstance(module, torch.nn.Module):
            return [module]
    raise ValueError('the DepthNet has no .decoder sub-module to refine; use target="all"')


def _state_copy(modules):
    """Deep copies of the state dicts (parameters and buffers) of ``modules``."""
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def _restore(modules, states):
    with torch.no_grad():
        for module, state in zip(modules, states):
            module.load_state_dict(state)


def _complete_batch(batch, device):
    """Move ``batch`` to ``device`` and default ``images_aug`` to ``images`` (no augmentation)."""
    out = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    if 'images_aug' not in out:
        out['images_aug'] = out['images']
    return out


def _loss_value(model, batch):
    """Deterministic loss of ``model`` on ``batch`` (eval mode, no gradients)."""
    with torch.no_grad():
        total, _, _ = model.depth_losses(batch)
    return float(total)


def _set_batchnorm_mode(modules, batchnorm):
    """Put the BatchNorm layers of ``modules`` in ``batchnorm`` mode (the rest stays eval)."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.train(batchnorm == 'train')


def refine_on_batch(model, batch, iterations=20, lr=1e-4, target='decoder', guard=True,
                    batchnorm='eval'):
    """Refine ``model`` in place on one batch with the self-supervised depth losses.

    Args:
        model: a ``FeatDepthModel`` (``.depth_net``, ``.pose_net``, ``.depth_losses``).
        batch: architecture batch format: ``images`` [B,F,3,H,W] in [0,1] ordered as
            ``cfg.model.frame_ids``, ``K`` [B,3,3] pixels at H,W; ``images_aug`` defaults to
            ``images``. Tensors are moved to the model's device.
        iterations: Adam steps (paper: 20 per test sample).
        lr: Adam learning rate.
        target: 'decoder' (depth decoder only) or 'all' (DepthNet + PoseNet).
        guard: restore the initial weights when the final loss is worse than the initial
            one or not finite.
        batchnorm: 'eval' keeps every BatchNorm on its running statistics during the steps;
            'train' normalises the refined modules' BatchNorm layers with the window's own
            statistics during the steps and updates their running statistics (the official
            refinement's train mode), so the weights adapt to a camera whose image
            statistics differ from the training data's (and a random network's unset
            statistics get set).

    Returns:
        dict with ``loss_before``, ``loss_after`` (eval-mode losses on ``batch``; ``loss_after``
        is the kept weights' loss), ``reverted`` (bool), ``iterations`` run and ``seconds``.

    The losses before and after (the guard's) are always measured in eval mode, with the
    running statistics the inference copy will use; with ``batchnorm='eval'`` they are
    exactly the optimised loss. Everything but the refined modules' BatchNorm layers stays in
    eval mode, and parameters outside ``target`` get no gradients. A reverted window restores
    the running statistics too.
    """
    if iterations < 0 or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f'iterations must be >= 0 and lr > 0, got {iterations}, {lr}')
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f'batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}')
    start = time.perf_counter()
    modules = refined_modules(model, target)
    device = next(model.parameters()).device
    batch = _complete_batch(batch, device)
    was_training = model.training
    grad_flags = {p: p.requires_grad for p in model.parameters()}
    initial = _state_copy(modules) if guard else None
    ran = 0
    try:
        model.eval()
        loss_before = _loss_value(model, batch)
        for p in model.parameters():
            p.requires_grad_(False)
        params = [p for m in modules for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=lr)
        _set_batchnorm_mode(modules, batchnorm)
        for _ in range(iterations):
            total, _, _ = model.depth_losses(batch)
            if not torch.isfinite(total):
                break
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            ran += 1
        model.eval()
        loss_after = _loss_value(model, batch)
        reverted = False
        worse = not math.isfinite(loss_after) or (
            math.isfinite(loss_before) and loss_after > loss_before)
        if guard and worse:
            _restore(modules, initial)
            reverted = True
            loss_after = _loss_value(model, batch)
    finally:
        for p, flag in grad_flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return {'loss_before': loss_before, 'loss_after': loss_after, 'reverted': reverted,
            'iterations': ran, 'seconds': time.perf_counter() - start}


def window_motion(images, frame_ids) -> float:
    """How much a window's camera moved: the largest mean absolute difference to its target.

    Args:
        images: [F,3,H,W] frames in [0,1] (one window, :func:`window_to_batch`'s batch item).
        frame_ids: the frame id of each of the F frames (0 is the target).

    Returns:
        max over the source frames of mean |source - target| (a fraction of the grey range);
        NaN when the frames hold NaN. Measured between consecutive KITTI frames at 320x96: a
        car standing still 0.003, creeping to a stop 0.005-0.017, driving in city traffic
        0.02-0.05, on odometry 00 0.05 and more (median 0.095).
    """
    frame_ids = list(frame_ids)
    target = images[frame_ids.index(0)]
    return max(float((images[i] - target).abs().mean())
               for i, f in enumerate(frame_ids) if f != 0)


def window_to_batch(window):
    """Turn one refinement window into a batch of size 1.

    ``window['images']``: [F,3,H,W] float in [0,1] (tensor or array), or [F,H,W,3] uint8
    array; ``window['K']``: [3,3] pixels at H,W. Frame order is ``cfg.model.frame_ids``.
    """
    images = window['images']
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f'window images must be [F,3,H,W], got {tuple(images.shape)}')
    K = torch.as_tensor(np.asarray(window['K'], dtype=np.float32)).reshape(1, 3, 3)
    return {'images': images.unsqueeze(0), 'K': K}


class OnlineRefiner:
    """Background-thread online refinement of a private copy of a ``FeatDepthModel``.

    ``on_weights(states)`` is called from the refiner thread after a window improved the loss;
    ``states`` is ``{'depth_net': state_dict}`` plus ``'pose_net'`` when ``target == 'all'``
    (detached clones, safe to keep). The callback should take a lock only for the swap, e.g.
    ``DepthPredictor.load_depth_state``.

    Settings (``iterations``, ``lr``, ``target``, ``guard``, ``batchnorm``, ``min_motion``,
    ``enabled``) start from ``cfg.refine`` and can be changed while running with
    :meth:`configure`. A window whose :func:`window_motion` is below ``min_motion`` is counted
    as ``static`` and not refined.
    """

    def __init__(self, model, cfg, device='cpu', on_weights=None, queue_size=None, logger=None):
        """Copy ``model`` to ``device`` (the caller's model is never touched)."""
        self.cfg = cfg
        self.device = device
        self.on_weights = on_weights
        self._log = logger or LOGGER
        self.model = copy.deepcopy(model).to(device)
        self.model.eval()
        if hasattr(self.model, 'cfg'):
            # Windows hold the frames of cfg.model.frame_ids (a camera stream has no stereo
            # partner): the private copy's losses use those ids, e.g. for an MS checkpoint.
            self.model.cfg = copy.deepcopy(self.model.cfg)
            self.model.cfg.model.frame_ids = tuple(cfg.model.frame_ids)
        size = cfg.refine.queue_size if queue_size is None else queue_size
        if size < 1:
            raise ValueError(f'queue_size must be >= 1, got {size}')
        self._lock = threading.Lock()
        self._worker = BoundedWorker(self._refine, int(size), 'fmdepth-refiner',
                                     on_error=self._on_error)
        self.settings = {'iterations': int(cfg.refine.iterations), 'lr': float(cfg.refine.lr),
                         'target': cfg.refine.target, 'guard': bool(cfg.refine.guard),
                         'batchnorm': cfg.refine.batchnorm,
                         'min_motion': float(cfg.refine.min_motion), 'enabled': True}
        refined_modules(self.model, self.settings['target'])  # validates the target early
        self._stats = {'processed': 0, 'improved': 0, 'reverted': 0, 'swaps': 0, 'errors': 0,
                       'static': 0, 'last_motion': None,
                       'last_loss_before': None, 'last_loss_after': None,
                       'last_seconds': None, 'last_error': None}

    def configure(self, **settings):
        """Change settings (any of :attr:`settings`' keys); they apply from the next window."""
        unknown = set(settings) - set(self.settings)
        if unknown:
            raise ValueError(f'unknown refinement settings: {sorted(unknown)}')
        if 'target' in settings:
            refined_modules(self.model, settings['target'])
        if settings.get('batchnorm', 'eval') not in BATCHNORM_MODES:
            raise ValueError(f'batchnorm must be one of {BATCHNORM_MODES}, '
                             f"got {settings['batchnorm']!r}")
        if 'iterations' in settings and int(settings['iterations']) < 0:
            raise ValueError('iterations must be >= 0')
        if 'lr' in settings and not (float(settings['lr']) > 0 and math.isfinite(settings['lr'])):
            raise ValueError('lr must be a finite number > 0')
        if 'min_motion' in settings and not (0.0 <= float(settings['min_motion']) <= 1.0):
            raise ValueError('min_motion must be in [0, 1]')
        with self._lock:
            self.settings.update(settings)

    def submit(self, window):
        """Queue a window (see :func:`window_to_batch`); drops the oldest when full."""
        with self._lock:
            if not self.settings['enabled']:
                return
        self._worker.submit(window)

    def start(self):
        """Start the background thread (idempotent)."""
        self._worker.start()

    def stop(self, timeout=10.0):
        """Stop the thread after the window in progress; queued windows are discarded."""
        self._worker.stop(timeout)

    def wait_idle(self, timeout=None):
        """Block until the queue is empty and no window is in progress; True if it got idle."""
        return self._worker.wait_idle(timeout)

    def stats(self):
        """Counters, last losses, ``queue`` length, ``running``/``busy`` and settings (a copy)."""
        work = self._worker.stats()
        with self._lock:
            out = dict(self._stats)
            out.update(submitted=work['submitted'], dropped=work['dropped'],
                       queue=work['queue'], queue_size=work['queue_size'],
                       running=work['running'], busy=work['busy'], **self.settings)
        return out

    def _on_error(self, exc):
        """Worker-thread error hook: a bad window is counted and logged, refinement goes on."""
        with self._lock:
            self._stats['errors'] += 1
            self._stats['last_error'] = f'{type(exc).__name__}: {exc}'
        self._log.warning('online refinement failed on a window: %s: %s',
                          type(exc).__name__, exc)

    def _refine(self, window):
        with self._lock:
            settings = dict(self.settings)
        if not settings['enabled'] or settings['iterations'] == 0:
            return
        batch = window_to_batch(window)
        # Measured: refining on the windows of a camera creeping to a stop raised the error of a
        # KITTI city drive (docs/training.md); a near-identity warp is explained as well by a
        # far scene as by the right one (reasoned). NaN is not skipped: the guard reverts it.
        motion = window_motion(batch['images'][0], self.cfg.model.frame_ids)
        with self._lock:
            self._stats['last_motion'] = motion
            if motion < settings['min_motion']:
                self._stats['static'] += 1
                return
        result = refine_on_batch(self.model, batch,
                                 iterations=settings['iterations'], lr=settings['lr'],
                                 target=settings['target'], guard=settings['guard'],
                                 batchnorm=settings['batchnorm'])
        improved = (not result['reverted'] and math.isfinite(result['loss_after'])
                    and result['loss_after'] < result['loss_before'])
        with self._lock:
            self._stats['processed'] += 1
            self._stats['reverted'] += int(result['reverted'])
            self._stats['improved'] += int(improved)
            self._stats['last_loss_before'] = result['loss_before']
            self._stats['last_loss_after'] = result['loss_after']
            self._stats['last_seconds'] = result['seconds']
        if improved and self.on_weights is not None:
            self.on_weights(self.weights(settings['target']))
            with self._lock:
                self._stats['swaps'] += 1

    def weights(self, target=None):
        """Clones of the refined state dicts: ``depth_net`` (+ ``pose_net`` for target 'all')."""
        target = target or self.settings['target']
        states = {'depth_net': {k: v.detach().clone()
                                for k, v in self.model.depth_net.state_dict().items()}}
        if target == 'all':
            states['pose_net'] = {k: v.detach().clone()
                                  for k, v in self.model.pose_net.state_dict().items()}
        return states
