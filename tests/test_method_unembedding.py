from prefixlab.methods import get_method
from tests.helpers import check_trains_only


def test_unembedding_trains_the_head_only():
    check_trains_only(get_method("unembedding"), ["head/kernel"], 16 * 10)  # tiny: no head bias
