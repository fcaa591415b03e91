"""Typed errors raised by the engine.

Every error the user can cause derives from :class:`SFCError` and carries a
one-line message that says what to fix. The CLI maps them to exit code 2 and
the app to ``st.error``; nothing else should ever reach a user as a traceback.
"""


class SFCError(Exception):
    """Base class of every user-facing engine error (one-line message)."""


class InputError(SFCError, ValueError):
    """Bad user input: prompts, pair files, hook points, thresholds, options."""


class OfflineError(SFCError):
    """A model, SAE or file would have to be downloaded, and no network is reachable."""


class AssetError(SFCError):
    """A bundled asset (GGUF, converted weights, SAE, feature index) is missing or corrupted."""


class IncompatibleSAEError(InputError):
    """An SAE does not fit the model (``d_in`` differs or its hook point does not exist)."""


class NumericalError(SFCError):
    """NaN or inf appeared in activations, gradients or metrics."""


class ExportError(SFCError):
    """An export format could not be produced (e.g. static images need Chromium for kaleido)."""
