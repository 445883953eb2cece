"""What a tuning method did to the weights: intruder dimensions (Shuttleworth et al., "LoRA vs Full Fine-tuning: An
Illusion of Equivalence", NeurIPS 2025) and the effective rank of the update.

    rows = weight_spectrum(run.base_model(0), run.model("sort_desc", "lora-r4-qkvofcproj", 0)[0])
    sum(r["intruders"] for r in rows)

An intruder dimension is one of the tuned weight's top k = 10 singular vectors whose largest |cosine| to every
singular vector of the base weight is below 0.5. As in the reference implementation
(reeceshuttle/intruder-dimensions, find_intruder_dimensions.py), the vectors compared are those of the weight's
output space -- torch's `U` of a (d_out, d_in) weight, which is `V` of prefixlab's (d_in, d_out) kernel -- and each
tuned vector is compared with all min(d_in, d_out) singular vectors of the base (an SVD without full matrices).
LoRA is merged into the kernel first, with its scale (W + scale A B), as the reference merges before the SVD.
The effective rank of dW = W_tuned - W_base is the fewest singular values whose squares hold >= 90 % of
||dW||_F^2 (0 for dW = 0).
"""

from __future__ import annotations

import numpy as np

from prefixlab.model import Linear, Transformer

INTRUDER_K = 10  # top singular vectors of the tuned weight examined (the reference's k)
INTRUDER_THRESHOLD = 0.5  # an intruder's largest |cosine| to the base's singular vectors is below this
ENERGY = 0.9  # the share of ||dW||_F^2 the effective rank must hold


def merged_kernel(linear: Linear) -> np.ndarray:
    """The (d_in, d_out) weight a Linear applies, in float64: its kernel, plus scale * A B for a LoRA module. An
    adapter that cannot be written as one weight (say IA3's scaling of activations) is refused."""
    kernel_DF = np.asarray(linear.kernel[...], np.float64)
    if hasattr(linear, "lora_a"):
        a_DR, b_RF = (np.asarray(p[...], np.float64) for p in (linear.lora_a, linear.lora_b))
        return kernel_DF + linear.lora_scale * (a_DR @ b_RF)
    if type(linear) is not Linear:
        raise ValueError(f"weight_spectrum: cannot merge a {type(linear).__name__} into one weight matrix")
    return kernel_DF


def model_weights(model: Transformer) -> dict[str, np.ndarray]:
    """{"layer<l>.<name>": merged kernel} for every Linear of every block (q, k, v, o, fc, ..., proj: LoRA's
    possible targets), then "head"."""
    out = {f"layer{l}.{name}": merged_kernel(lin) for l, block in enumerate(model.blocks)
           for name, lin in block.linears().items()}
    out["head"] = merged_kernel(model.head)
    return out


def output_directions(w_DF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(singular values S, output-space singular vectors as rows Vt_SF) of a (d_in, d_out) kernel, largest first."""
    _, s_S, vt_SF = np.linalg.svd(np.asarray(w_DF, np.float64), full_matrices=False)
    return s_S, vt_SF


def intruder_cosines(w_base_DF, w_tuned_DF, k: int = INTRUDER_K) -> np.ndarray:
    """For each of the tuned weight's top k output-space singular vectors, its largest |cosine| to any of the base's
    min(d_in, d_out) singular vectors (unit vectors, so the cosine is the dot product). Shape (min(k, rank),)."""
    w_base_DF, w_tuned_DF = np.asarray(w_base_DF), np.asarray(w_tuned_DF)
    if w_base_DF.ndim != 2 or w_base_DF.shape != w_tuned_DF.shape:
        raise ValueError(f"weight_spectrum: base and tuned weights must be matrices of one shape, got "
                         f"{w_base_DF.shape} and {w_tuned_DF.shape}")
    if k < 1:
        raise ValueError(f"weight_spectrum: k must be >= 1, got {k}")
    _, base_SF = output_directions(w_base_DF)
    _, tuned_SF = output_directions(w_tuned_DF)
    return np.abs(tuned_SF[:k] @ base_SF.T).max(axis=1)


def intruder_count(w_base_DF, w_tuned_DF, k: int = INTRUDER_K, threshold: float = INTRUDER_THRESHOLD) -> int:
    """How many of the tuned weight's top k singular vectors are intruders (largest |cosine| < threshold)."""
    return int((intruder_cosines(w_base_DF, w_tuned_DF, k) < threshold).sum())


def effective_rank(delta_DF, energy: float = ENERGY) -> int:
    """The fewest singular values of `delta_DF` whose squares sum to >= `energy` of the total; 0 for a zero matrix."""
    if not 0 < energy <= 1:
        raise ValueError(f"weight_spectrum: energy must be in (0, 1], got {energy}")
    s2 = np.linalg.svd(np.asarray(delta_DF, np.float64), compute_uv=False) ** 2
    total = s2.sum()
    if total == 0:
        return 0
    # a relative slack of 1e-12 so that a share landing exactly on `energy` is not lost to rounding
    return int(np.searchsorted(np.cumsum(s2) / total, energy * (1 - 1e-12)) + 1)


def weight_spectrum(base: Transformer, tuned: Transformer, k: int = INTRUDER_K,
                    threshold: float = INTRUDER_THRESHOLD, energy: float = ENERGY) -> list[dict]:
    """One JSON-able record per weight matrix of `base` (model_weights): {"weight", "shape", "intruders" (of the top
    k), "max_cosines" (the top k's largest |cosine| to the base), "delta_rank" (effective rank of dW at `energy`),
    "delta_norm" (||dW||_F), "relative_delta" (||dW||_F / ||W_base||_F)}. `tuned` is a model of the same shapes, its
    LoRA merged in (a context method's model is the base itself: no intruders, dW = 0)."""
    w_base, w_tuned = model_weights(base), model_weights(tuned)
    if w_base.keys() != w_tuned.keys():
        raise ValueError(f"weight_spectrum: the models' weights differ: {sorted(w_base)} vs {sorted(w_tuned)}")
    rows = []
    for name, wb_DF in w_base.items():
        wt_DF = w_tuned[name]
        cos_K = intruder_cosines(wb_DF, wt_DF, k)
        delta_DF = wt_DF - wb_DF
        norm = float(np.linalg.norm(delta_DF))
        rows.append({"weight": name, "shape": list(wb_DF.shape), "intruders": int((cos_K < threshold).sum()),
                     "max_cosines": [round(float(c), 6) for c in cos_K], "delta_rank": effective_rank(delta_DF, energy),
                     "delta_norm": norm, "relative_delta": norm / max(float(np.linalg.norm(wb_DF)), 1e-30)})
    return rows
