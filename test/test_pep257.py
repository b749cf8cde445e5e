"""Docstring checks (ament_python's test_pep257, with docstrings required in the package).

Convention: pydocstyle's ``pep257`` (summary on the first line, as flake8-docstrings checks;
ament's own convention would also demand D213, a summary on the second line, which this project
does not use). Inside ``fmdepth_ros/`` every public module, package, class, method and function
needs a docstring (D100-D104); magic methods, nested classes and ``__init__`` (documented by
their class) may go without (D105-D107). Elsewhere (launch, test, scripts, setup.py) only the
form of the docstrings present is checked, as ament does. Runs pydocstyle itself rather than
ament_pep257, which does not pass pydocstyle's property exemption (D401 on ``@property``) on.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OPTIONAL_EVERYWHERE = ['D105', 'D106', 'D107']
OPTIONAL_OUTSIDE_PACKAGE = ['D100', 'D101', 'D102', 'D103', 'D104'] + OPTIONAL_EVERYWHERE

CHECKS = {
    'package': (['fmdepth_ros'], OPTIONAL_EVERYWHERE),
    'others': (['launch', 'test', 'scripts', 'setup.py'], OPTIONAL_OUTSIDE_PACKAGE),
}


def run_pep257(paths, add_ignore):
    """Check ``paths`` (relative to the repository root); return (exit code, report)."""
    paths = [p for p in paths if os.path.exists(os.path.join(ROOT, p))]
    proc = subprocess.run(
        [sys.executable, '-m', 'pydocstyle', '--convention=pep257', r'--match=.*\.py',
         '--add-ignore=' + ','.join(add_ignore), *paths],
        cwd=ROOT, capture_output=True, text=True)
    assert 'No module named pydocstyle' not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.linter
@pytest.mark.pep257
@pytest.mark.parametrize('check', sorted(CHECKS))
def test_pep257(check):
    """Docstrings are present (in the package) and well formed (everywhere)."""
    paths, add_ignore = CHECKS[check]
    rc, report = run_pep257(paths, add_ignore)
    assert rc == 0, f'docstring problems in {paths}:\n{report}'
