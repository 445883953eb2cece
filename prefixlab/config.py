"""Model configuration and the named presets of the papers' experiments.

Shape letters, for array names such as `x_BSD` throughout prefixlab (one meaning each):
  B batch (examples)            T content tokens (a task example: 2N - 1)   N digits of a task's input or answer
  P context slots               S stream positions (P + T)                  Q query positions (a suffix of S)
  D model width                 H heads                                     K head width
  V vocabulary                  L layers                                    F flattened per-slot features
  E base seeds (one base each)  R runs per base                             U optimizer steps
  G evaluation batches          I dataset items (theory)                    C candidates (sampling, prompt search)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A GPT-style decoder with the switches the papers' models and constructions need.

    Defaults match the reference minGPT model: learned token and position embeddings, pre-LayerNorm blocks,
    fused QKV with bias, 4x tanh-GELU MLP, final LayerNorm, untied head without bias, dropout 0.1.
    """

    vocab_size: int = 10
    block_size: int = 19  # content positions (input N + target N - 1); context slots carry no position
    n_layer: int = 1
    n_head: int = 1
    d_model: int = 96
    head_dim: int | None = None  # default d_model // n_head
    mlp_hidden: tuple[int, ...] | None = None  # hidden widths; default (4 * d_model,); () = no MLP
    activation: str = "gelu_tanh"  # or "relu"
    ln_attn: bool = True  # LayerNorm before attention
    ln_mlp: bool = True  # LayerNorm before the MLP
    ln_final: bool = True
    residual_attn: bool = True
    residual_mlp: bool = True
    attn_scale: float | None = None  # default 1 / sqrt(head_dim)
    causal: bool = True
    pos_emb: bool = True
    head_bias: bool = False
    dropout: float = 0.1
    dtype: str = "float32"  # parameters: or "float64" (needs jax_enable_x64)
    compute_dtype: str | None = None  # the Linear matmuls' operands: None (= dtype) or "bfloat16" (precision.py)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.compute_dtype not in (None, self.dtype) and (self.compute_dtype, self.dtype) != ("bfloat16", "float32"):
            raise ValueError(f"compute_dtype must be None, {self.dtype!r} or (for a float32 model) 'bfloat16', "
                             f"got {self.compute_dtype!r}")
        if self.head_dim is None and self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")

    @property
    def hd(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_head

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.mlp_hidden if self.mlp_hidden is not None else (4 * self.d_model,)

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else self.hd**-0.5

    @property
    def jnp_dtype(self):
        if self.dtype == "float64" and not jax.config.read("jax_enable_x64"):
            raise ValueError("a float64 model needs jax.config.update('jax_enable_x64', True) before use")
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


ACTIVATIONS = {
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}

PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(n_layer=2, n_head=2, d_model=16),
    "paper-exp1": ModelConfig(n_layer=1, n_head=1, d_model=96),
    "paper-exp2": ModelConfig(n_layer=1, n_head=4, d_model=256, ln_attn=False),
    "paper-exp3": ModelConfig(n_layer=4, n_head=4, d_model=256),
    # narrower versions of exp2 / exp3 for the CPU `quick` reproduction profile (scripts/reproduce.py)
    "small-exp2": ModelConfig(n_layer=1, n_head=4, d_model=128, ln_attn=False),
    "small-exp3": ModelConfig(n_layer=4, n_head=4, d_model=64),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)
