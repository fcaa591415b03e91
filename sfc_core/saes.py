"""SAE loading: the bundled residual SAEs, any SAE Lens release, or a local SAE folder.

Every SAE is an SAE Lens ``SAE`` object (so every architecture SAE Lens knows,
ReLU, Gated, JumpReLU, TopK, ..., works the same way downstream) paired with the
TransformerLens hook point it reads. :func:`check_fits` refuses an SAE whose
``d_in`` or hook point does not fit the model.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from . import defaults
from .hooks import layer_of
from .hooks import parse as parse_hook
from .errors import AssetError, IncompatibleSAEError, InputError, OfflineError
from .model import hub_reachable, offline_message

_SAE_LOCK = threading.Lock()
_SAE_CACHE: dict[tuple, object] = {}


@dataclass(frozen=True)
class LoadedSAE:
    """An SAE Lens SAE with where it came from.

    Attributes:
        hook_name: TransformerLens hook point it encodes, e.g. ``blocks.7.hook_resid_post``.
        sae: the ``sae_lens.SAE`` (encode: ``[..., d_in] -> [..., d_sae]``).
        source: ``"bundled"``, ``"<release>/<sae_id>"`` or a folder path.
        neuronpedia_id: Neuronpedia id of the SAE if SAE Lens knows one, else ``None``.
    """

    hook_name: str
    sae: object
    source: str
    neuronpedia_id: str | None = None

    @property
    def d_sae(self) -> int:
        """Dictionary width (number of latents)."""
        return int(self.sae.cfg.d_sae)

    @property
    def layer(self) -> int:
        """Block index of the hook point (−1 if it has none)."""
        return layer_of(self.hook_name)


def sae_hook_name(sae) -> str:
    """The hook point recorded in an SAE Lens SAE's config metadata.

    Raises:
        AssetError: the config has no ``metadata.hook_name``.
    """
    meta = getattr(sae.cfg, "metadata", None)
    name = getattr(meta, "hook_name", None) if meta is not None else None
    if not name:
        raise AssetError("SAE config has no hook_name in its metadata")
    return str(name)


def check_fits(model, sae, hook_name: str) -> None:
    """Refuse an SAE that does not fit ``model`` at ``hook_name``.

    Raises:
        IncompatibleSAEError: the hook point is not in the model, or (at a residual-stream point, the only
            width checked) ``d_in`` differs from the model's ``d_model``.
    """
    if hook_name not in model.hook_dict:
        raise IncompatibleSAEError(
            f"SAE hook point '{hook_name}' does not exist in model '{model.cfg.model_name}'"
        )
    try:
        residual = parse_hook(hook_name).is_residual
    except InputError:
        residual = False
    width = model.cfg.d_model if residual else None
    if width is not None and int(sae.cfg.d_in) != width:
        raise IncompatibleSAEError(
            f"SAE at '{hook_name}' has d_in={sae.cfg.d_in} but the model's residual width is {width}"
        )


def _load_dir(path: Path, device: str):
    from sae_lens import SAE

    if not (path / "cfg.json").is_file():
        raise AssetError(f"not an SAE Lens folder (no cfg.json): {path}")
    try:
        return SAE.load_from_disk(str(path), device=device, dtype="float32")
    except Exception as exc:  # corrupt safetensors, wrong shapes, bad json
        raise AssetError(f"cannot load SAE from {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def bundled_sae_dirs() -> dict[str, Path]:
    """Hook point → folder of every shipped SAE (reads ``assets/saes``).

    Raises:
        AssetError: the bundle folder is missing or empty.
    """
    if not defaults.SAE_DIR.is_dir():
        raise AssetError(f"bundled SAEs not found in {defaults.SAE_DIR}; rebuild them with 'sfc bundle build'")
    dirs = {}
    for sub in sorted(defaults.SAE_DIR.iterdir()):
        cfg = sub / "cfg.json"
        if cfg.is_file():
            try:
                hook = json.loads(cfg.read_text())["metadata"]["hook_name"]
            except (KeyError, json.JSONDecodeError) as exc:
                raise AssetError(f"corrupted SAE config: {cfg}") from exc
            dirs[hook] = sub
    if not dirs:
        raise AssetError(f"no SAE in {defaults.SAE_DIR}; rebuild them with 'sfc bundle build'")
    return dict(sorted(dirs.items(), key=lambda kv: layer_of(kv[0])))


def load_bundled_saes(model, hook_names: list[str] | None = None, device: str = "cpu") -> dict[str, LoadedSAE]:
    """Load the shipped SAEs (all, or those at ``hook_names``), checked against ``model``.

    Raises:
        InputError: a requested hook point has no bundled SAE.
        AssetError: files missing or corrupted.
        IncompatibleSAEError: an SAE does not fit ``model`` (e.g. a model other than the bundled one).
    """
    dirs = bundled_sae_dirs()
    wanted = list(dirs) if hook_names is None else list(hook_names)
    unknown = [h for h in wanted if h not in dirs]
    if unknown:
        raise InputError(f"no bundled SAE at {', '.join(unknown)}; bundled hook points: {', '.join(dirs)}")
    out = {}
    for hook in wanted:
        key = ("bundled", hook, device)
        with _SAE_LOCK:
            if key not in _SAE_CACHE:
                _SAE_CACHE[key] = _load_dir(dirs[hook], device)
            sae = _SAE_CACHE[key]
        check_fits(model, sae, hook)
        out[hook] = LoadedSAE(hook, sae, defaults.BUNDLED_SAE_SOURCE)
    return out


def load_bundled_sites(model, hook_names: list[str]) -> dict[str, LoadedSAE]:
    """The shipped dictionaries at ``hook_names``: residual SAEs (:func:`load_bundled_saes`) and, at
    ``blocks.L.hook_mlp_out``, MLP transcoders (:func:`~sfc_core.transcoders.load_bundled_transcoders`).

    Raises:
        AssetError: a shipped file is missing or unreadable.
        InputError: a hook point with nothing shipped there.
    """
    from .hooks import is_transcoder_hook
    from .transcoders import load_bundled_transcoders

    tc = [h for h in hook_names if is_transcoder_hook(h)]
    rest = [h for h in hook_names if h not in tc]
    out = load_bundled_saes(model, rest) if rest else {}
    if tc:
        out.update(load_bundled_transcoders(model, [layer_of(h) for h in tc]))
    return out


def load_sae_folder(model, path: str | Path, device: str = "cpu") -> LoadedSAE:
    """Load an SAE saved in SAE Lens' on-disk format (``cfg.json`` + ``sae_weights.safetensors``).

    Raises:
        InputError: the folder does not exist.
        AssetError: it is not a loadable SAE, or its config names no hook point.
        IncompatibleSAEError: it does not fit ``model``.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"SAE folder not found: {path}")
    sae = _load_dir(path, device)
    hook = sae_hook_name(sae)
    check_fits(model, sae, hook)
    return LoadedSAE(hook, sae, str(path))


def known_releases() -> dict:
    """SAE Lens' registry of pretrained releases (read from the installed package, offline)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def load_sae_release(model, release: str, sae_id: str, device: str = "cpu") -> LoadedSAE:
    """Load one SAE of an SAE Lens release (downloads; needs the network unless cached).

    Raises:
        InputError: unknown release or SAE id.
        OfflineError: the weights would be downloaded and no hub is reachable.
        AssetError: its config names no hook point.
        IncompatibleSAEError: it does not fit ``model``.
    """
    from sae_lens import SAE

    releases = known_releases()
    if release not in releases:
        raise InputError(f"unknown SAE Lens release '{release}' (the offline default uses the bundled SAEs)")
    ids = releases[release].saes_map
    if sae_id not in ids:
        sample = ", ".join(list(ids)[:5])
        raise InputError(f"release '{release}' has no SAE id '{sae_id}' (e.g. {sample})")
    key = (release, sae_id, device)
    with _SAE_LOCK:
        if key not in _SAE_CACHE:
            if not hub_reachable():
                raise OfflineError(offline_message(f"SAE '{release}/{sae_id}'"))
            _SAE_CACHE[key] = SAE.from_pretrained(release, sae_id, device=device)
        sae = _SAE_CACHE[key]
    hook = sae_hook_name(sae)
    check_fits(model, sae, hook)
    np_id = (releases[release].neuronpedia_id or {}).get(sae_id)
    return LoadedSAE(hook, sae, f"{release}/{sae_id}", np_id)


def sae_weights_dtype(sae) -> torch.dtype:
    """The dtype of an SAE's weights (that of ``W_dec``)."""
    return sae.W_dec.dtype


def _layer_of_sae_id(sae_id: str) -> int | None:
    """Layer number in an SAE Lens id such as ``blocks.8.hook_resid_pre`` or ``layer_5/width_16k/...``."""
    m = re.search(r"(?:blocks\.|layer_|layers\.|L)(\d+)", sae_id)
    return int(m.group(1)) if m else None


def load_release_layers(model, release: str, layers: list[int] | None, device: str = "cpu") -> dict[str, LoadedSAE]:
    """Load one SAE per requested layer from an SAE Lens release (the first id naming that layer).

    Raises:
        InputError: unknown release, no ``layers`` given, or a layer with no SAE in the release.
        OfflineError / IncompatibleSAEError: see :func:`load_sae_release`.
    """
    releases = known_releases()
    if release not in releases:
        raise InputError(f"unknown SAE Lens release '{release}' (the offline default uses the bundled SAEs)")
    if not layers:
        raise InputError(f"choose --layers for release '{release}'")
    ids = list(releases[release].saes_map)
    out = {}
    for layer in layers:
        match = [i for i in ids if _layer_of_sae_id(i) == layer]
        if not match:
            raise InputError(f"release '{release}' has no SAE at layer {layer}")
        loaded = load_sae_release(model, release, match[0], device)
        out[loaded.hook_name] = loaded
    return dict(sorted(out.items(), key=lambda kv: layer_of(kv[0])))


def load_sae_by_source(model, source: str, device: str = "cpu", allowed_folders=()) -> LoadedSAE:
    """Load an SAE from a circuit file's ``source``: ``"<release>/<sae_id>"`` or a folder path.

    A circuit file alone never makes the engine read a folder: a folder ``source`` loads only when it is one of
    ``allowed_folders`` (or inside one), the folders the user passed on the command line (``--sae-dir``).

    Raises:
        InputError: neither a known release nor an allowed existing folder, or an unknown SAE id.
        AssetError: the folder is not a loadable SAE.
        OfflineError: a release's weights would be downloaded and no hub is reachable.
        IncompatibleSAEError: it does not fit ``model``.
    """
    if check_sae_source(source, allowed_folders) == "release":
        release, _, sae_id = source.partition("/")
        return load_sae_release(model, release, sae_id, device)
    return load_sae_folder(model, source, device)


def check_sae_source(source, allowed_folders=()) -> str:
    """``"bundled"``, ``"release"`` or ``"folder"``: what a circuit file's SAE ``source`` names, once it is
    allowed (the policy of :func:`load_sae_by_source`; no file is read, so it runs before a model loads).

    Raises:
        InputError: not text, or a folder the user did not pass in ``allowed_folders``.
    """
    if not isinstance(source, str) or not source:
        raise InputError(f"an SAE source must be a release id or a folder, not {source!r}")
    if source in (defaults.BUNDLED_SAE_SOURCE, defaults.BUNDLED_TRANSCODER_SOURCE):
        return "bundled"
    release, _, sae_id = source.partition("/")
    if release in known_releases() and sae_id:
        return "release"
    try:
        folder = Path(source).expanduser().resolve()
        allowed = [Path(a).expanduser().resolve() for a in allowed_folders]
    except (OSError, ValueError, RuntimeError):
        raise InputError(f"SAE source {source[:80]!r} is neither an SAE Lens release id nor a folder") from None
    if not any(folder == a or a in folder.parents for a in allowed):
        raise InputError(f"the circuit file names the SAE folder {source[:200]!r}, which is not the bundled default "
                         "or an SAE Lens release; pass that folder with --sae-dir to load it")
    return "folder"
