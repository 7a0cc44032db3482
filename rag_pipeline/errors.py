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


class OcrUnavailable(AnalysisError):
    """The OCR engine (tesseract) or its language data is not installed: fix the machine and
    retry; nothing is wrong with the file."""

    retryable = True


class OcrFailed(ModelError):
    """tesseract exited with an error or ran past its timeout on an image that decoded."""


class VlmOutputInvalid(AnalysisError):
    """A vision-language model answered, but not with the JSON its prompt asks for. Permanent:
    decoding is greedy, so asking again gives the same answer."""

    def __init__(self, message: str, *, step: str = "", raw: str = ""):
        super().__init__(message)
        self.step = step  # "classify" or "caption"
        self.raw = raw  # what the model said (clamped), for the dead letter

    def __reduce__(self):  # keep step and raw across process boundaries
        return (_rebuild_vlm_output_invalid, (str(self), self.step, self.raw))


def _rebuild_vlm_output_invalid(message: str, step: str, raw: str) -> VlmOutputInvalid:
    return VlmOutputInvalid(message, step=step, raw=raw)


class VlmUnavailable(AnalysisError):
    """No vision-language model to ask: endpoint down or refusing us, vLLM not installed, model
    directory missing. Nothing is wrong with the image."""

    retryable = True


class VlmRequestRejected(AnalysisError):
    """The model endpoint refused the request for this one image (a 4xx other than 429)."""


class ModelMismatch(RuntimeError):
    """The local model is not the one the tasks name: status ``model_mismatch``, no output.
    Not an ``AnalysisError``: nothing is wrong with the input, and retrying cannot help."""

    status = "model_mismatch"


class Timeout(AnalysisError):
    """Parsing one file ran past the per-file wall-time limit; the parser was stopped."""


class MemoryLimit(AnalysisError):
    """Parsing one file needed more memory than the per-file limit."""


class ParserCrashed(AnalysisError):
    """The parser process died on this file (a signal, a crash in a native library)."""
