"""Atomic file output: the project's one writer.

Temporary file in the target folder, fsync, ``os.replace``, fsync of the folder.
A reader (or a crash) never sees a half-written file: either the previous file or the new one.
Every ``os.replace`` of the package goes through :func:`replace_atomic`.
"""

import contextlib
import json
import os
from pathlib import Path
import shutil
import uuid


def _fsync_directory(directory):
    """Make a rename in ``directory`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomic(src, dst):
    """``os.replace(src, dst)`` and fsync ``dst``'s folder.

    ``src`` must be complete and flushed (a file written by :func:`open_atomic`, or a folder
    such as a bag written next to ``dst``); it must be on the same filesystem as ``dst``.
    """
    os.replace(src, dst)
    _fsync_directory(os.path.dirname(os.path.abspath(os.fspath(dst))))


@contextlib.contextmanager
def open_atomic(path, mode='wb', encoding=None):
    """Open a temporary file beside ``path``; on success fsync it and move it onto ``path``.

    Creates the parent folder. The file has mode 0666 & ~umask like ``open``. If the body
    raises, the temporary file is removed and ``path`` is left as it was::

        with open_atomic('model.pt') as f:
            torch.save(obj, f)
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'open_atomic: mode must be "w" or "wb", got {mode!r}')
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # O_EXCL + a unique name (like mkstemp) but mode 0666 & ~umask (mkstemp forces 0600)
    tmp = os.path.join(directory,
                       f'.{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if mode == 'w':
            f = os.fdopen(fd, 'w', encoding=encoding or 'utf-8')
        else:
            f = os.fdopen(fd, 'wb')
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace_atomic(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with open_atomic(path, 'w') as f:
        f.write(text)


def write_json_atomic(path, data, sort_keys=True):
    """Write ``data`` as indented JSON to ``path`` atomically (creates the parent folder)."""
    with open_atomic(path, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=sort_keys)
        f.write('\n')


def build_directory_atomic(out_dir, fill):
    """Run ``fill(tmp)`` on a fresh temporary folder beside ``out_dir``, then move it there.

    A crash or an exception in ``fill`` leaves ``out_dir`` as it was (the temporary folder is
    removed); on success a previous ``out_dir`` is swapped out and deleted. Returns the
    ``out_dir`` Path.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f'.{out_dir.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        if out_dir.exists():
            previous = tmp.with_name(tmp.name + '-previous')
            replace_atomic(out_dir, previous)
            shutil.rmtree(previous, ignore_errors=True)
        replace_atomic(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
