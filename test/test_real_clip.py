"""The real KITTI clip committed under data/: its layout, intrinsics, and that it regenerates."""

import os
from pathlib import Path

import cv2
from fmdepth_ros.data import real_clip
from fmdepth_ros.data.folder import FolderSource
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / 'data'
SHARED = Path('/work/shared/data')
ODOMETRY = DATA / real_clip.ODOMETRY_CLIP
CITY = DATA / real_clip.CITY_CLIP
needs_shared = pytest.mark.skipif(
    not (SHARED / real_clip.ODOMETRY_SOURCE).is_dir()
    or not (SHARED / real_clip.CITY_SOURCE).is_dir(),
    reason='the shared KITTI samples (../shared/data) are absent')


def _k(fx, fy, cx, cy, sx, sy):
    return np.array([[fx * sx, 0, cx * sx], [0, fy * sy, cy * sy], [0, 0, 1]])


def test_committed_clip_layout_and_intrinsics():
    """The clip has its frame counts and sizes, and K is the KITTI K scaled to the frames."""
    odometry, city = FolderSource(ODOMETRY), FolderSource(CITY)
    assert len(odometry) == 200 and len(city) == 78
    assert odometry.poses is not None and odometry.poses.shape == (200, 4, 4)
    assert odometry.load_image(0).shape == (97, 320, 3)
    assert city.load_image(77).shape == (97, 320, 3)
    assert not np.array_equal(city.load_image(0)[..., 0], city.load_image(0)[..., 1])  # colour
    np.testing.assert_allclose(odometry.K, _k(718.856, 718.856, 607.1928, 185.2157,
                                              320 / 1241, 97 / 376), rtol=1e-9)
    np.testing.assert_allclose(city.K, _k(721.5377, 721.5377, 609.5593, 172.854,
                                          320 / 1242, 97 / 375), rtol=1e-9)
    assert all(city.has_depth(i) for i in range(len(city)))
    raw = cv2.imread(str(CITY / 'depth' / '0000000040.png'), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (375, 1242)
    assert 10_000 < np.count_nonzero(raw) < 30_000       # sparse LiDAR, not a dense map
    assert (DATA / 'README.md').read_text().count('CC BY-NC-SA 3.0') == 1
    total = sum(p.stat().st_size for p in DATA.rglob('*') if p.is_file())
    assert total < 25 * 2 ** 20


@pytest.mark.slow
@needs_shared
def test_clip_regenerates_from_shared_data(tmp_path):
    """make_real_clip on ../shared/data gives the committed pixels, calibration and poses."""
    made = real_clip.make_real_clip(SHARED, tmp_path)
    for name, folder in made.items():
        committed = DATA / name
        files = sorted(str(p.relative_to(committed)) for p in committed.rglob('*')
                       if p.is_file())
        assert files == sorted(str(p.relative_to(folder)) for p in folder.rglob('*')
                               if p.is_file())
        for rel in files:
            a, b = committed / rel, folder / rel
            if rel.endswith('.png'):
                np.testing.assert_array_equal(cv2.imread(str(a), cv2.IMREAD_UNCHANGED),
                                              cv2.imread(str(b), cv2.IMREAD_UNCHANGED),
                                              err_msg=rel)
            else:
                assert a.read_text() == b.read_text(), rel


def test_make_real_clip_names_missing_source(tmp_path):
    """A folder without the KITTI samples is a one-line DataError naming what is missing."""
    from fmdepth_ros.errors import DataError

    with pytest.raises(DataError, match=real_clip.ODOMETRY_SOURCE):
        real_clip.make_real_clip(tmp_path, tmp_path / 'out')
    assert not os.path.exists(tmp_path / 'out')
