import os
import tempfile

# Most of the suite's time is XLA compiling small programs, and LLVM's -O3 is most of that: the tests compile at
# -O0, which halves it (same programs, last bits of some floats differ). Users' runs compile at -O3; an
# XLA_FLAGS that names a level keeps it (docs/performance.md: the suite at -O3).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402 (XLA_FLAGS is read when jax first starts its backend; set it before anything can)
import pytest  # noqa: E402

# Implicit rank promotion hides shape bugs: make it an error throughout the suite.
jax.config.update("jax_numpy_rank_promotion", "raise")

# The suite's time is mostly XLA compiling the same tiny programs again (new closures, child processes): one
# persistent compilation cache for the session, inherited by the scripts the tests start, compiles each once.
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="prefixlab-test-xla-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


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


# One small sweep that several tests compare against (grid shards merged, several processes): run once.
# One learning rate per method (lr_grid 1) keeps the suite's many sweeps small; tests/test_sweep.py runs the grid.
REFERENCE_SWEEP = dict(model="tiny", pretrain="add1", tasks=("add1",), methods=("none", "prefix", "lora"),
                       prefix_lengths=(1, 2), pretrain_steps=40, tune_steps=20, seeds=2, eval_samples=40,
                       lr_grid=(1.0,))


@pytest.fixture(scope="session")
def reference_sweep(tmp_path_factory):
    """(SweepConfig, records, tmp folder) of REFERENCE_SWEEP run in this process, into its own cache."""
    from prefixlab.sweep import SweepConfig, run_sweep

    tmp = tmp_path_factory.mktemp("reference-sweep")
    config = SweepConfig(**REFERENCE_SWEEP, cache_dir=str(tmp / "cache"))
    return config, run_sweep(config, tmp / "run", progress=False, log=lambda *a, **k: None), tmp
