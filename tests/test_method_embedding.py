from prefixlab.methods import get_method
from tests.helpers import check_trains_only


def test_embedding_trains_the_token_embeddings_only():
    check_trains_only(get_method("embedding"), ["tok_emb"], 10 * 16)
