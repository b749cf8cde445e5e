"""Atomic file output: write to a temporary file in the target folder, fsync, ``os.replace``.

A reader (or a crash) never sees a half-written file: either the previous file or the new one.
"""

import json
import os
import tempfile


def write_json_atomic(path, data, sort_keys=True):
    """Write ``data`` as indented JSON to ``path`` atomically (creates the parent folder)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp',
                               dir=directory)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(data, f, indent=2, sort_keys=sort_keys)
            f.write('\n')
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
