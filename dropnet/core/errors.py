"""The project's one error hierarchy.

Every error a user can cause derives from :class:`DropnetError` and carries a message that
names what was wrong and what was expected. The CLI prints the message (no traceback); the
server maps each class to a status code in one table, ``dropnet.server.status_codes.CODE_BY_ERROR``
(shared by the gRPC error handler ``dropnet.server.grpc_errors`` and the metrics).
"""


class DropnetError(Exception):
    """Base class of every error dropnet raises on purpose."""


class ConfigError(DropnetError):
    """A configuration (preset, flags, config.json) is invalid or self-contradictory."""


class DataError(DropnetError):
    """A dataset file is missing, malformed, or holds values outside what is expected."""


class RunDirError(DropnetError):
    """A training run directory is missing files or is inconsistent."""


class ModelPackageError(DropnetError):
    """An exported model package is missing, corrupt, or fails verification."""


class InvalidInputError(DropnetError):
    """An inference request's input does not match what the model expects."""


class NotFoundError(DropnetError):
    """A requested model, version or output does not exist."""


class ResourceExhaustedError(DropnetError):
    """A bounded resource (queue, message size) is full; retry later or send less."""
