"""The KITTI split files shipped with the package (FeatDepth's, MIT) and split name lookup.

``splits/`` (repository root; installed to ``share/fmdepth_ros/splits``) holds the official
FeatDepth split files, with their ``LICENSE.FeatDepth``::

    eigen_zhou/train_files.txt   39,810 training frames (= Monodepth2's eigen_zhou list)
    eigen/test_files.txt         the 697-frame Eigen test list
    odom/train_files.txt, val_files.txt, test_files_09.txt, test_files_10.txt

A split is named on the command line by a path to a file, or by a name resolved by
:func:`resolve_split`: ``eigen_zhou`` / ``eigen`` / ``odom`` (the folder's ``train_files.txt``
when training, ``test_files.txt`` when evaluating), ``odom_09`` / ``odom_10`` (the odometry
test sequences), or ``folder/file`` such as ``odom/val_files``.
"""

import os
import sys
from typing import List, Optional

#: what ``resolve_split`` picks inside a split folder for each purpose
PURPOSE_FILES = {'train': 'train_files.txt', 'test': 'test_files.txt'}


def split_dirs() -> List[str]:
    """Folders that may hold the shipped splits, most specific first (existing ones only).

    The source tree (an editable / ``colcon --symlink-install`` install or a checkout) first,
    then ``<prefix>/share/fmdepth_ros/splits`` of the Python prefix this package is installed in.
    """
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [os.path.join(os.path.dirname(package_dir), 'splits')]
    # site-packages/fmdepth_ros -> <prefix>/lib/pythonX.Y/site-packages -> <prefix>
    prefix = os.path.abspath(os.path.join(package_dir, '..', '..', '..', '..'))
    for root in (prefix, sys.prefix):
        candidates.append(os.path.join(root, 'share', 'fmdepth_ros', 'splits'))
    seen, found = set(), []
    for path in candidates:
        if path not in seen and os.path.isdir(path):
            seen.add(path)
            found.append(path)
    return found


def split_names(directory: Optional[str] = None) -> List[str]:
    """Return the names :func:`resolve_split` accepts for ``directory`` (default: shipped)."""
    dirs = [directory] if directory else split_dirs()
    names = set()
    for base in dirs:
        for folder in sorted(os.listdir(base)):
            path = os.path.join(base, folder)
            if not os.path.isdir(path):
                continue
            files = sorted(f for f in os.listdir(path) if f.endswith('.txt'))
            if any(f in PURPOSE_FILES.values() for f in files):
                names.add(folder)
            for f in files:
                stem = f[:-len('.txt')]
                names.add(f'{folder}/{stem}')
                if stem.startswith('test_files_'):
                    names.add(f'{folder}_{stem[len("test_files_"):]}')
    return sorted(names)


def _lookup(base, name, purpose):
    """Return the file of split ``name`` under ``base`` for ``purpose``, or None."""
    name = name.strip('/')
    if name.endswith('.txt'):
        name = name[:-len('.txt')]
    folder, _, rest = name.partition('/')
    if rest:
        candidates = [os.path.join(base, folder, rest + '.txt')]
    else:
        candidates = [os.path.join(base, folder, PURPOSE_FILES[purpose])]
        stem, _, sequence = name.rpartition('_')
        if stem and sequence.isdigit():
            candidates.append(os.path.join(base, stem, f'test_files_{sequence}.txt'))
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


def resolve_split(split: str, purpose: str = 'train') -> str:
    """Return the split file named by ``split``: an existing file, else a shipped split name.

    Args:
        split: a path to a split file, or a name (``eigen_zhou``, ``eigen``, ``odom``,
            ``odom_09``, ``odom/val_files`` ...; see the module docstring).
        purpose: ``'train'`` (a folder name means its ``train_files.txt``) or ``'test'``
            (its ``test_files.txt``).

    Raises:
        ValueError: one line naming the unknown split and the known names.
    """
    if purpose not in PURPOSE_FILES:
        raise ValueError(f'split purpose must be train or test, got {purpose!r}')
    if os.path.isfile(split):
        return os.path.abspath(split)
    dirs = split_dirs()
    for base in dirs:
        path = _lookup(base, split, purpose)
        if path is not None:
            return path
    if not dirs:
        raise ValueError(f'split {split!r}: not a file, and the shipped splits are not '
                         'installed (share/fmdepth_ros/splits)')
    raise ValueError(f'split {split!r}: no such file, nor a {purpose} split name (known: '
                     f'{", ".join(split_names())})')


__all__ = ['resolve_split', 'split_dirs', 'split_names', 'PURPOSE_FILES']
