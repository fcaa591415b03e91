"""Export of our transcoders in circuit-tracer's folder format (sfc_core.peer_export), on tiny random transcoders:
the written tensors are ours with circuit-tracer's orientation, circuit-tracer's formulas on them give our transcoder's
outputs, and bad input is refused with one line and nothing written."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sfc_core.errors import IncompatibleSAEError, InputError
from sfc_core.peer_export import (
    FEATURE_INPUT_HOOK,
    FEATURE_OUTPUT_HOOK,
    export_circuit_tracer,
    layer_file,
    read_circuit_tracer,
)
from sfc_core.transcoders import save_transcoder, transcoder_sites
from tests.tiny import tiny_model, tiny_transcoder

N_LAYERS, D_MODEL, D_SAE = 3, 16, 24
CT_KEYS = {"W_enc", "W_dec", "b_enc", "b_dec", "W_skip", "activation_function.threshold"}


def _tcs(n: int = N_LAYERS, d_sae: int = D_SAE, **kw):
    return {L: tiny_transcoder(L, d_model=D_MODEL, d_sae=d_sae, seed=L, **kw) for L in range(n)}


def _export(src, tmp_path, name="ct", **kw):
    kw = {"n_layers": N_LAYERS, "d_model": D_MODEL, **kw}
    return export_circuit_tracer(src, tmp_path / name, "tiny", **kw)


def _assert_ours(layers: dict, tcs: dict, atol: float = 0.0):
    assert sorted(layers) == sorted(tcs)
    for L, tc in tcs.items():
        t = layers[L]
        assert set(t) == CT_KEYS
        assert all(v.dtype == torch.float32 for v in t.values())
        expect = {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec, "W_skip": tc.W_skip,
                  "activation_function.threshold": tc.threshold}
        for k, v in expect.items():
            assert t[k].shape == v.shape, k
            torch.testing.assert_close(t[k], v.detach().float(), atol=atol, rtol=0)
        assert t["W_enc"].shape == (D_SAE, D_MODEL) and t["W_skip"].shape == (D_MODEL, D_MODEL)


def _leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ what is written
def test_dict_export_writes_our_tensors_transposed_as_circuit_tracer_reads_them(tmp_path):
    tcs = _tcs()
    out = _export(tcs, tmp_path, scan="tiny/tc")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"] + sorted(layer_file(L) for L in tcs)
    config, layers = read_circuit_tracer(out)
    assert config == {"model_kind": "transcoder_set", "model_name": "tiny", "feature_input_hook": FEATURE_INPUT_HOOK,
                      "feature_output_hook": FEATURE_OUTPUT_HOOK, "scan": "tiny/tc"}
    assert FEATURE_INPUT_HOOK == "ln2.hook_normalized" and FEATURE_OUTPUT_HOOK == "hook_mlp_out"
    _assert_ours(layers, tcs)
    assert _leftovers(tmp_path) == []


def test_circuit_tracer_formulas_on_the_export_give_our_transcoder(tmp_path):
    """circuit-tracer 0.5.0: encode F.linear(x, W_enc, b_enc), JumpReLU z·[z > θ]; decode f @ W_dec + b_dec +
    x @ W_skip.T. A negative threshold is written as 0, which keeps SAE Lens' relu(z)·[z > θ] exactly."""
    tcs = _tcs(threshold=-0.3)
    _, layers = read_circuit_tracer(_export(tcs, tmp_path))
    x = torch.randn(5, 7, D_MODEL, dtype=torch.float64)
    for L, tc in tcs.items():
        t = {k: v.double() for k, v in layers[L].items()}
        z = F.linear(x, t["W_enc"], t["b_enc"])
        f = z * (z > t["activation_function.threshold"])
        y = f @ t["W_dec"] + t["b_dec"] + x @ t["W_skip"].T
        with torch.no_grad():
            f_ours = tc.encode(x)
            assert (f_ours > 0).any() and (z < 0).any() and ((z < 0) & (z > -0.3)).any()
            torch.testing.assert_close(f, f_ours, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(y, tc(x), atol=1e-5, rtol=1e-5)
        assert (layers[L]["activation_function.threshold"] == 0).all()


def test_folder_export_equals_dict_export(tmp_path):
    tcs = _tcs()
    src = tmp_path / "src"
    for L, tc in tcs.items():
        save_transcoder(tc, src / f"L{L}_transcoder")
    _, layers = read_circuit_tracer(_export(src, tmp_path))
    _assert_ours(layers, tcs, atol=0.0)
    _, from_str = read_circuit_tracer(_export(str(src), tmp_path, name="ct2"))
    assert all(torch.equal(from_str[L][k], layers[L][k]) for L in layers for k in CT_KEYS)


def test_engine_sites_export(tmp_path):
    from sfc_core.saes import LoadedSAE

    model = tiny_model(n_layers=N_LAYERS)
    tcs = _tcs()
    sites = transcoder_sites(model, tcs)
    _, layers = read_circuit_tracer(_export(sites, tmp_path))
    _assert_ours(layers, tcs)
    wrapped = {h: LoadedSAE(h, d, "test") for h, d in sites.items()}  # as load_bundled_transcoders returns them
    _, layers = read_circuit_tracer(_export(wrapped, tmp_path, name="ct2"))
    _assert_ours(layers, tcs)


def test_fp16_export_and_overwrite(tmp_path):
    tcs = _tcs()
    out = _export(tcs, tmp_path, dtype="float16")
    _, layers = read_circuit_tracer(out)
    assert all(v.dtype == torch.float16 for t in layers.values() for v in t.values())
    torch.testing.assert_close(layers[1]["W_enc"].float(), tcs[1].W_enc.T.float(), atol=2e-3, rtol=2e-3)
    with pytest.raises(InputError, match="exists"):
        _export(tcs, tmp_path)
    _export(tcs, tmp_path, overwrite=True)
    _, layers = read_circuit_tracer(out)
    assert all(v.dtype == torch.float32 for t in layers.values() for v in t.values())
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------ refused input, nothing written
def _refused(tmp_path, src, match, exc=InputError, **kw):
    with pytest.raises(exc, match=match) as info:
        _export(src, tmp_path, **kw)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert not (tmp_path / "ct").exists() and _leftovers(tmp_path) == []
    return message


def test_missing_layer_is_refused(tmp_path):
    tcs = _tcs()
    del tcs[1]
    _refused(tmp_path, tcs, r"missing layer\(s\) 1")


def test_layer_count_other_than_n_layers_is_refused(tmp_path):
    _refused(tmp_path, _tcs(), r"missing layer\(s\) 3", n_layers=4)
    _refused(tmp_path, _tcs(), r"outside the model's blocks 0\.\.1", n_layers=2)


def test_width_other_than_d_model_is_refused(tmp_path):
    msg = _refused(tmp_path, _tcs(), "maps 16 -> 16, the model's d_model is 32", exc=IncompatibleSAEError, d_model=32)
    assert "layer 0" in msg


def test_wrong_hook_names_are_refused(tmp_path):
    tcs = _tcs()
    tcs[2].cfg.metadata.hook_name = "blocks.2.hook_resid_mid"
    _refused(tmp_path, tcs, "layer 2 reads 'blocks.2.hook_resid_mid'")
    tcs = _tcs()
    tcs[0].cfg.metadata.hook_name_out = "blocks.1.hook_mlp_out"
    _refused(tmp_path, tcs, "needs 'blocks.0.ln2.hook_normalized' -> 'blocks.0.hook_mlp_out'")
    tcs = _tcs()
    tcs = {0: tcs[0], 1: tcs[2], 2: tcs[1]}  # keyed by the wrong layer
    _refused(tmp_path, tcs, "transcoder at layer 1 reads 'blocks.2.ln2.hook_normalized'")


def test_other_bad_transcoders_are_refused(tmp_path):
    tcs = _tcs()
    tcs[1] = tiny_transcoder(1, d_model=D_MODEL, d_sae=8)
    _refused(tmp_path, tcs, r"different widths d_sae \[8, 24\]")
    tcs = _tcs()
    with torch.no_grad():
        tcs[2].W_dec[0, 0] = float("nan")
    _refused(tmp_path, tcs, "layer 2 has NaN or inf in W_dec")
    tcs = _tcs()
    del tcs[0].W_skip
    _refused(tmp_path, tcs, r"layer 0 is not a JumpReLU skip transcoder \(no W_skip\)")
    _refused(tmp_path, {"0": 1}, "keyed by layer number")
    _refused(tmp_path, {}, "no transcoders")
    _refused(tmp_path, 3, "must be a folder or a dict")
    _refused(tmp_path, _tcs(), "dtype must be one of", dtype="int8")


def test_bad_folders_are_refused(tmp_path):
    _refused(tmp_path, tmp_path / "nowhere", "transcoder folder not found")
    src = tmp_path / "src"
    src.mkdir()
    _refused(tmp_path, src, "no transcoders in")
    tcs = _tcs()
    for L, tc in tcs.items():
        save_transcoder(tc, src / f"L{L}_transcoder")
    (src / "L1_transcoder" / "cfg.json").unlink()
    _refused(tmp_path, src, "L1_transcoder has no cfg.json")
    save_transcoder(tcs[1], src / "L1_transcoder")
    (src / "L2_transcoder" / "sae_weights.safetensors").unlink()
    _refused(tmp_path, src, "transcoder unreadable: .*L2_transcoder")
    (src / "L2_transcoder" / "cfg.json").write_text(json.dumps({"architecture": "nope"}))
    _refused(tmp_path, src, "L2_transcoder")


def test_model_shape_is_required_for_another_model(tmp_path):
    with pytest.raises(InputError, match="give n_layers and d_model of model 'gpt2'"):
        export_circuit_tracer(_tcs(), tmp_path / "ct", "gpt2")
    with pytest.raises(InputError, match=r"circuit-tracer needs one per block, missing layer\(s\) 3, 4, 5"):
        export_circuit_tracer(_tcs(), tmp_path / "ct")  # bundled: 30 layers
    assert not (tmp_path / "ct").exists()


def test_existing_out_dir_is_kept(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="exists"):
        _export(_tcs(), tmp_path)
    assert (tmp_path / "ct" / "mine.txt").read_text() == "keep"
