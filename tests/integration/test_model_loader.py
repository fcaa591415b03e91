import pytest
import torch

from sfc_core import model as M
from sfc_core.errors import InputError


def test_hf_equivalence_of_wrapped_model():
    tl = M.load_model()
    hf, tok = M.load_hf_bundled()
    for prompt in ["The capital of France is", "When Mary and John went to the store, John gave a drink to"]:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            a = torch.log_softmax(hf(ids).logits, -1)
            b = torch.log_softmax(tl(ids), -1)
        assert (a - b).abs().max().item() <= 1e-3


def test_unknown_model_name_is_refused():
    with pytest.raises(InputError, match="unknown model"):
        M.load_model("no-such-model-xyz")
