"""Error classes for bad input. The class name is what a dead letter records."""

from __future__ import annotations


class AnalysisError(Exception):
    """A file could not be analysed. Permanent unless ``retryable``."""

    retryable = False

    @property
    def error_class(self) -> str:
        return type(self).__name__


class EmptyFile(AnalysisError):
    """Zero bytes: nothing to index."""


class UnreadableFile(AnalysisError):
    """The OS refused to read it (permissions, I/O error)."""


class BrokenSymlink(AnalysisError):
    """A symbolic link whose target does not exist."""


class SymlinkLoop(AnalysisError):
    """A symbolic link that resolves to itself, directly or through others."""


class NotRegularFile(AnalysisError):
    """A FIFO, socket or device: never opened, it could block or never end."""


class FileTooLarge(AnalysisError):
    """Over the configured byte limit."""


class UnsupportedMediaType(AnalysisError):
    """No analyzer reads this type of file."""


class UndecodableText(AnalysisError):
    """A text file whose bytes are not valid text in any supported encoding."""


class CorruptDocument(AnalysisError):
    """A PDF or HTML file that its parser cannot read."""


class CorruptImage(AnalysisError):
    """An image that cannot be decoded (truncated, bad header, wrong format)."""


class DecompressionBomb(AnalysisError):
    """An image whose declared pixel count exceeds the configured limit."""


class NoTextContent(AnalysisError):
    """A document that parsed but holds no text to index (an image-only PDF, say)."""


class ModelError(AnalysisError):
    """The model failed on valid input."""

    retryable = True
