"""Errors with actionable messages.

Library code raises these, never ``sys.exit``; the CLI catches :class:`RddError` once,
prints its message as one line on stderr and exits 1 (``--debug`` shows the traceback).
"""


class RddError(Exception):
    """Base class: the message says what is wrong, where, and what to do."""


class ConfigError(RddError, ValueError):
    """An option or combination of options that cannot work."""


class DataError(RddError):
    """A data set folder, image or label that cannot be used."""


class ModelError(RddError):
    """An unknown model name or a model that cannot be built as asked."""


class CheckpointError(RddError):
    """A checkpoint that is missing, corrupt, or made for another model or class count."""


class TrainingError(RddError):
    """Training had to stop (non-finite loss, ...)."""


class ExportError(RddError):
    """An artifact that could not be exported, or a bad export input."""


class DeployError(RddError):
    """A model artifact, engine or video source that cannot be used at deploy time."""


class MissingDependencyError(RddError, ImportError):
    """An optional package (tensorrt, pycuda, ...) is needed but not installed."""
