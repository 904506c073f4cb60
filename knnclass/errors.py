"""One exception tree for the library; the CLI and HTTP layers map it once."""

from __future__ import annotations

__all__ = [
    "ChangeNotFoundError",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "DependencyError",
    "EncoderError",
    "EncoderMismatchError",
    "ExampleNotFoundError",
    "ExportError",
    "HistoryConflictError",
    "InputError",
    "KnnclassError",
    "NotTunedError",
    "OverloadedError",
    "SnapshotError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "VerificationError",
]


class KnnclassError(Exception):
    """Base of every error knnclass raises on purpose."""

    exit_code = 1
    http_status = 500


class InputError(KnnclassError):
    """The caller gave something unusable: a bad file, column, text or option."""

    exit_code = 2
    http_status = 422


class DependencyError(KnnclassError):
    """An optional dependency is missing; the message says what to install."""

    exit_code = 3
    http_status = 500


class EncoderError(KnnclassError):
    """The encoder could not be loaded or run."""

    exit_code = 4


class ExportError(EncoderError):
    """Export to ONNX failed or the exported model failed the parity gate."""


class EncoderMismatchError(EncoderError):
    """A collection was indexed with a different encoder than the one in use."""

    http_status = 409


class StoreError(KnnclassError):
    """The vector store failed or holds something unexpected."""

    exit_code = 5
    http_status = 503


class StoreLockedError(StoreError):
    """Another process holds the embedded store."""

    holder_pid: int | None = None  # the holder, when its lock file names it


class StoreCorruptError(StoreError):
    """The store directory is damaged or belongs to another program."""


class CollectionNotFoundError(StoreError):
    """No collection of that name exists."""

    http_status = 404


class CollectionExistsError(StoreError):
    """A collection of that name already exists."""

    http_status = 409


class ExampleNotFoundError(KnnclassError):
    """No example with that id exists in the collection."""

    exit_code = 6
    http_status = 404


class NotTunedError(KnnclassError):
    """The collection has no tuned vote rule yet (run `knnclass tune`)."""

    exit_code = 7
    http_status = 409


class OverloadedError(KnnclassError):
    """Too much work in flight; retry later."""

    http_status = 429


class ChangeNotFoundError(KnnclassError):
    """No such change set in the collection's history (or nothing left to undo)."""

    exit_code = 6
    http_status = 404


class HistoryConflictError(KnnclassError):
    """An undo was refused: the change set's examples changed since (or it was undone already)."""

    exit_code = 8
    http_status = 409


class SnapshotError(InputError):
    """A snapshot file is damaged, incomplete or not a knnclass snapshot; nothing was written."""


class VerificationError(StoreError):
    """A copy or restore did not read back as written (counts or checksum differ); nothing was switched."""
