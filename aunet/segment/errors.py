"""The errors of preprocessing: one family, each carrying the file and line/row it is about.

Library callers catch `SegmentError` (or a subclass); only the `aunet-segment` command line
turns them into exit codes (2 for `InvalidRequest`, 1 for the rest).
"""

from __future__ import annotations


class SegmentError(Exception):
    """Base class. `file` and `location` ("line 12", "row 5", "after line 40") name the place
    when there is one; the message already contains them."""

    def __init__(self, message: str, *, file: str | None = None, location: str | None = None):
        super().__init__(message)
        self.file, self.location = file, location

    def __reduce__(self):
        # Pickled across processes (datatrove executors, multiprocessing users): keep file and location.
        return _rebuild, (type(self), str(self), self.file, self.location)


class InvalidRequest(SegmentError, ValueError):
    """The call itself is wrong: a bad strategy or option, inputs that name no file."""


class BadDocument(SegmentError):
    """`on_error="fail"` met a document it cannot segment."""

    def __init__(self, file: str, location: str, reason: str):
        super().__init__(f"{file}: {location}: {reason}", file=file, location=location)
        self.reason = reason

    def __reduce__(self):
        return BadDocument, (self.file, self.location, self.reason)


class ManifestError(SegmentError, ValueError):
    """A shard directory's manifest is unreadable, or rank manifests cannot be merged."""


class MissingManifest(ManifestError, FileNotFoundError):
    """The directory has no `manifest.json` (yet)."""


def _rebuild(cls: type, message: str, file: str | None, location: str | None) -> SegmentError:
    return cls(message, file=file, location=location)
