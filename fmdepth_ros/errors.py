"""Every exception class of the project, in one place.

Each carries a one-line, user-facing message that names the file or setting at fault.
``FmdepthError`` is the common base: the ``fmdepth`` dispatcher (``cli.py``) prints any of them
as ``fmdepth <command>: error: <message>`` and exits with code 2, and the node reports a
``StartupError`` the same way. None of them derives from ``CliError``: a library error is not a
command-line error, the dispatcher just catches their common base.
"""


class FmdepthError(Exception):
    """Base of the project's expected failures (one-line message)."""


class CliError(FmdepthError):
    """Bad command-line arguments of an ``fmdepth`` subcommand."""


class ConfigError(FmdepthError, ValueError):
    """A model/training config cannot be used (unknown key, invalid value)."""


class CheckpointError(FmdepthError):
    """A checkpoint cannot be used; the message names the file."""


class WeightsError(CheckpointError, ValueError):
    """A network weights file cannot be used; the message names the file.

    A ``CheckpointError`` so that the CLI / node handlers of checkpoint errors report it too.
    """


class ConversionError(FmdepthError, ValueError):
    """Official FeatDepth / Monodepth2 weights cannot be converted; names the file."""


class TrainingError(FmdepthError):
    """A training run cannot start or continue (bad data, bad checkpoint)."""


class DataError(FmdepthError, ValueError):
    """A dataset or calibration file cannot be read (missing, malformed)."""


class BagError(FmdepthError):
    """A bag cannot be read (missing, truncated, corrupt, or lacks a needed topic)."""


class StartupError(FmdepthError):
    """The node cannot start (bad weights file, config, device)."""


class ExportError(FmdepthError):
    """A network cannot be exported to ONNX (exporter missing or failed, bad ONNX file)."""


class BackendUnavailable(FmdepthError):
    """An inference backend cannot run here (runtime, provider or engine build missing).

    The backend factory catches it, warns once and tries the next backend.
    """
