"""JSON from and to users' files: bounded parsing that only ever fails with :class:`~sfc_core.errors.InputError`,
and atomic writes that never leave a half-written file or a stray ``*.tmp``.

Why its own module: ``json.loads`` fails in several untyped ways on hostile input (``ValueError`` for an
integer of more than 4,300 digits, ``RecursionError`` for deeply nested arrays, ``UnicodeDecodeError`` for
bytes that are not UTF-8), and every reader of pair files, circuit files and uploads needs the same limits.
Python's own ``json`` does the parsing; this module adds the limits and the typed errors.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError

#: Largest JSON document read from a user's file or upload, in bytes (circuit files; pair files have their own
#: limit in :mod:`sfc_core.pairs`); the app's upload limit (``.streamlit/config.toml``) is the same 20 MB.
MAX_JSON_BYTES = 20 * 1024 * 1024
#: Deepest nesting of arrays/objects accepted (a circuit file needs 4).
MAX_JSON_DEPTH = 32


def _depth(doc: Any, limit: int) -> int:
    """Nesting depth of ``doc`` (0 for a scalar), walking iteratively and stopping past ``limit``."""
    deepest, stack = 0, [(doc, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, d + 1)
        if deepest > limit:
            return deepest
        stack.extend((c, d + 1) for c in children)
    return deepest


def as_text(data: str | bytes, what: str) -> str:
    """``data`` as text: bytes are decoded as UTF-8 (a leading BOM is dropped); a BOM is dropped from text too.

    Raises:
        InputError: bytes that are not UTF-8.
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(f"{what} is not UTF-8 text (byte {exc.start})") from None
    return data[1:] if data.startswith("\ufeff") else data


def parse_json(data: str | bytes, what: str, max_bytes: int = MAX_JSON_BYTES,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse one JSON document from a user.

    Args:
        data: the text (or UTF-8 bytes) of the document.
        what: what it is, for messages (e.g. ``"circuit file"``, ``"line 3"``).
        max_bytes: largest accepted size (characters of text, bytes of bytes).
        max_depth: deepest accepted nesting of arrays and objects.

    Returns:
        The parsed value (``NaN`` / ``Infinity`` literals are read as floats; the readers check numbers).

    Raises:
        InputError: too large, not UTF-8, not valid JSON (with the line), a number too long to read, or
            nested deeper than ``max_depth``.
    """
    if len(data) > max_bytes:
        raise InputError(f"{what} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    text = as_text(data, what)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise InputError(f"{what} nests arrays or objects deeper than {max_depth} levels") from None
    except ValueError as exc:  # e.g. an integer of more than sys.get_int_max_str_digits() digits
        raise InputError(f"{what} holds a value JSON cannot read here: {str(exc).splitlines()[0][:120]}") from None
    if _depth(doc, max_depth) > max_depth:
        raise InputError(f"{what} nests arrays or objects deeper than {max_depth} levels")
    return doc


def read_json_file(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read and parse a JSON file (limits and errors of :func:`parse_json`).

    Raises:
        InputError: missing, a folder, unreadable, too large, or not a valid JSON document.
    """
    try:
        path = Path(path)
        found = path.is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        raise InputError(f"{what} not found: {str(path)[:80]!r}") from None
    if not found:
        raise InputError(f"{what} not found: {path}")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{what} {path} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return parse_json(data, f"{what} {path.name}", max_bytes)


def load_json(source: str | Path | bytes, what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """One JSON document from a user, given as a file path, as JSON text (an object: its first character after
    whitespace and a BOM is ``{``) or as UTF-8 bytes; limits and errors of :func:`parse_json`.

    Raises:
        InputError: a missing or unreadable file, not UTF-8, too large, not valid JSON, or nested too deep.
    """
    if isinstance(source, (bytes, bytearray)):
        return parse_json(source, what, max_bytes)
    if as_text(str(source), what).lstrip().startswith("{"):
        return parse_json(str(source), what, max_bytes)
    return read_json_file(source, what, max_bytes)


def check_writable(out: str | Path, flag: str = "--out") -> Path:
    """Fail before any work when ``out`` cannot be written as a file.

    Raises:
        InputError: ``out`` is a folder, its folder does not exist, or the folder is not writable.
    """
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{flag} {out} is a folder; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{flag} {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InputError(f"{flag} {out}: not writable")
    return out


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed over ``path`` at the end:
    ``path`` is either its old content or the new one, never half-written, and no temporary file is left on any
    error or interruption (``KeyboardInterrupt`` included).

    Raises:
        OSError: the folder cannot be written.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_json_atomic(doc: Any, path: str | Path, indent: int | None = 1) -> Path:
    """:func:`write_text_atomic` of ``doc`` as JSON."""
    return write_text_atomic(json.dumps(doc, indent=indent), path)
