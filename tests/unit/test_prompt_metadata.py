"""Every circuit Discovery.select returns names its prompt: G.graph["prompt"] and ["prompt_tokens"], indexed as the
"@pos" nodes are, and the figure's position bands and the Neuronpedia export carry them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sfc_core import export as X
from sfc_core import viz as V
from sfc_core.discovery import DiscoverConfig, discover, prompt_metadata
from sfc_core.nodes import is_end_id
from sfc_core.pairs import PromptPair, tokenize_pairs
from tests.tiny import tiny_model, tiny_sae

CORPUS = ["When Mary and John went to the store, John gave a drink to Mary.",
          "When John and Mary went to the store, Mary gave a drink to John."]
PAIRS = [PromptPair("When Mary and John went to the store, John gave a drink to",
                    "When Mary and John went to the store, Mary gave a drink to", " Mary", " John"),
         PromptPair("When John and Mary went to the store, Mary gave a drink to",
                    "When John and Mary went to the store, John gave a drink to", " John", " Mary")]
TOKENS = ["<|endoftext|>", "When", " Mary", " and", " John", " went", " to", " the", " store", ",", " John", " gave",
          " a", " drink", " to"]


def _tokenizer():
    """A byte-level BPE trained on CORPUS: every word of it is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>")


@pytest.fixture(scope="module")
def setup():
    tok = _tokenizer()
    model = tiny_model(d_vocab=len(tok))
    model.tokenizer = tok  # set_tokenizer would look the tokenizer up by name
    saes = {f"blocks.{L}.hook_resid_post": tiny_sae(kind=k, hook=f"blocks.{L}.hook_resid_post", seed=L)
            for L, k in ((0, "standard"), (1, "topk"))}
    return model, saes


def test_selected_circuits_carry_the_prompt_and_its_tokens(setup):
    model, saes = setup
    d = discover(model, saes, PAIRS, DiscoverConfig(aggregation="none", top_k=12, edges=False))
    for G in (d.graph, d.select(top_k=6), d.select(node_threshold=0.0)):
        assert G.graph["prompt"] == PAIRS[0].clean
        assert G.graph["prompt_tokens"] == TOKENS
    # positions index the tokens as the engine ran them: BOS at 0, row 0 of the clean tokens
    G = d.select(top_k=12)
    row = d.runs.batch.clean_tokens[0].tolist()
    positions = {G.nodes[n]["position"] for n in G if not is_end_id(n)}
    assert positions and all(0 <= p < len(TOKENS) for p in positions)
    for p in positions:
        assert model.tokenizer.decode([row[p]]) == G.graph["prompt_tokens"][p]
    # the figure labels its position bands with them, the Neuronpedia export carries them
    ticks = list(V.circuit_figure(G).layout.yaxis.ticktext)
    assert ticks == [f"{p}: {TOKENS[p]!r}" for p in sorted(positions)]
    md = X.to_neuronpedia(G)["metadata"]
    assert md["prompt"] == PAIRS[0].clean and md["prompt_tokens"] == TOKENS
    ctx = {n["ctx_idx"] for n in X.to_neuronpedia(G)["nodes"] if n["feature_type"] == "sae feature"}
    assert ctx == positions


def test_selection_methods_and_old_metadata_get_them_too(setup):
    model, saes = setup
    d = discover(model, saes, PAIRS, DiscoverConfig(method="fap", budget=4, edges=False))
    assert d.select().graph["prompt_tokens"] == TOKENS and d.select().graph["prompt"] == PAIRS[0].clean
    # a discovery whose metadata predates the fields (e.g. kept in a session) fills them from its runs
    del d.metadata["prompt"], d.metadata["prompt_tokens"]
    d.graph.graph.pop("prompt"), d.graph.graph.pop("prompt_tokens")
    assert d.select().graph["prompt_tokens"] == TOKENS
    a = discover(model, saes, PAIRS, DiscoverConfig(top_k=5, edges=False))
    del a.metadata["prompt"], a.metadata["prompt_tokens"]
    assert a.select(top_k=3).graph["prompt"] == PAIRS[0].clean


def test_length_alignment_names_the_tokens_the_model_saw(setup):
    model, _ = setup
    pair = PromptPair("When Mary and John went to the store, John gave a drink to",
                      "When John went to the store, Mary gave a drink to", " Mary", " John")
    batch = tokenize_pairs(model, [pair], length_mismatch="align_last")
    meta = prompt_metadata(model, batch)
    # the clean prompt is two tokens longer: its earliest two non-BOS tokens ("When", " Mary") were dropped
    assert meta["prompt_tokens"] == ["<|endoftext|>", *TOKENS[3:]]
    assert meta["prompt"] == " and John went to the store, John gave a drink to"
    assert len(meta["prompt_tokens"]) == int(batch.last_pos[0]) + 1


def test_no_tokenizer_means_no_tokens():
    batch = SimpleNamespace(clean_tokens=torch.zeros(2, 5, dtype=torch.long), last_pos=torch.tensor([4, 4]),
                            pairs=[PromptPair("a b", "a c", " x", " y")])
    assert prompt_metadata(object(), batch) == {"prompt": "a b", "prompt_tokens": []}
    batch.pairs = []
    assert prompt_metadata(object(), batch) == {"prompt": "", "prompt_tokens": []}
