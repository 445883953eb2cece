import jax
import pytest

# Implicit rank promotion hides shape bugs: make it an error throughout the suite.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Enables float64 for one test and restores the previous setting."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture(scope="module")
def x64_module():
    """Enables float64 for a whole test module (theory checks) and restores the previous setting."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)
