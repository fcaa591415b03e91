"""Typed errors raised by the engine, and the fixes they carry.

Every error the user can cause derives from :class:`SFCError` and carries a
one-line message that says what is wrong. The CLI maps them to exit code 2 and
the app to ``st.error``; nothing else should ever reach a user as a traceback.

Fixes as data
-------------
An error (or a warning, :class:`Notice`) that one option setting would resolve
carries that setting as :class:`Fix` ``(option, value)``, in the engine's own
names: ``option`` is a keyword of :func:`~sfc_core.pairs.tokenize_pairs` or a
field of :class:`~sfc_core.discovery.DiscoverConfig` (``"multi_token"``,
``"length_mismatch"``, ``"aggregation"``, ``"metric"``), ``value`` the value to
give it. The message itself names no API syntax (no ``multi_token='truncate'``,
no ``--multi-token``): each surface words the fix in its own terms, the CLI as
its flag (``sfc_core.cli``), the app as the control on its screen
(``pages/_shared/display.py``), so that neither ever tells a user to set
something it does not show them.
"""

from __future__ import annotations

from typing import NamedTuple


class Fix(NamedTuple):
    """An option setting that resolves a problem: ``option`` (engine keyword) := ``value`` (engine value)."""

    option: str
    value: str


def _as_fix(fix: Fix | tuple[str, str] | None) -> Fix | None:
    """``fix`` as a :class:`Fix` (``None`` stays ``None``).

    Raises:
        TypeError: ``fix`` is not a pair of strings (a programming error, not a user's).
    """
    if fix is None:
        return None
    option, value = fix
    if not isinstance(option, str) or not isinstance(value, str):
        raise TypeError(f"a fix is (option, value) strings, not {fix!r}")
    return Fix(option, value)


class SFCError(Exception):
    """Base class of every user-facing engine error (one-line message).

    Args:
        message: what is wrong, as a sentence a user reads (no API or CLI syntax).
        fix: the option setting that resolves it, ``(option, value)`` in engine names (see the module doc),
            or ``None`` when no option does. Read back as :attr:`fix`.
    """

    def __init__(self, message: str = "", *, fix: Fix | tuple[str, str] | None = None):
        super().__init__(message)
        self.fix: Fix | None = _as_fix(fix)

    def __reduce__(self):
        # Keep the fix through pickling (Exception's default reduce passes only ``args``).
        return (_rebuild, (type(self), self.args, self.fix))


def _rebuild(cls, args, fix):
    exc = cls(*args)
    exc.fix = fix
    return exc


class Notice(str):
    """A one-line warning for the user (an ordinary ``str``) that may carry a :class:`Fix`, like an error.

    Used where the engine goes on but drops or changes something the user gave (``PairBatch.warnings``).
    ``Notice("row 2 skipped: ...", fix=("length_mismatch", "align_last")).fix`` is the setting that would keep it.
    """

    fix: Fix | None

    def __new__(cls, text: str, fix: Fix | tuple[str, str] | None = None):
        self = super().__new__(cls, text)
        self.fix = _as_fix(fix)
        return self

    def __reduce__(self):
        return (type(self), (str(self), self.fix))


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
