from prefixlab.methods import get_method
from tests.helpers import check_trains_only

TINY_BIASES = [f"blocks/{b}/{m}/bias" for b in (0, 1)
               for m in ("attn/q", "attn/k", "attn/v", "attn/o", "ln1", "ln2", "mlp/layers/0", "mlp/layers/1")]


def test_bias_trains_every_bias_only():
    # tiny, per block: q, k, v, o 16 each, two LayerNorms 16 each, MLP 64 + 16; then the final LayerNorm's 16
    check_trains_only(get_method("bias"), TINY_BIASES + ["ln_f/bias"], 2 * (4 * 16 + 2 * 16 + 64 + 16) + 16)
