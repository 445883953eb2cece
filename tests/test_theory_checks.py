"""The theory checks as a library: Claims out, float64 only while they run, scripts/theory.py's JSON rows."""

import json
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from prefixlab.experiments.claims import Claim
from prefixlab.theory import checks
from tests.helpers import load_script


def test_float64_is_restored_after_the_checks():
    before = jax.config.read("jax_enable_x64")
    with checks.float64():
        assert jax.config.read("jax_enable_x64")
    assert jax.config.read("jax_enable_x64") == before
    with pytest.raises(KeyError), checks.float64():  # restored when a check raises, too
        raise KeyError
    assert jax.config.read("jax_enable_x64") == before


def test_float64_is_only_for_the_thread_that_asked():
    """The reproduction runs the checks beside float32 training in another thread."""
    inside, outside = threading.Event(), {}

    def checks_thread():
        with checks.float64():
            inside.set()
            done.wait(5)

    done = threading.Event()
    t = threading.Thread(target=checks_thread)
    t.start()
    inside.wait(5)
    outside["dtype"] = jnp.ones(2).dtype
    done.set()
    t.join()
    assert outside["dtype"] == jnp.float32


def test_identities_part_gives_claims_and_the_json_rows_of_theory_py():
    before = jax.config.read("jax_enable_x64")
    data = checks.timed_part("identities", "test", model="tiny")
    assert jax.config.read("jax_enable_x64") == before
    assert set(data) == {"command", "wall_s", "rows"} and len(data["rows"]) == 8
    for r in data["rows"]:
        assert set(r) == {"claim", "sizes", "measured", "threshold", "holds"} and r["holds"] is True
        assert Claim.from_theory_row(r).theory_row() == r
    assert any("float64" in r["sizes"] for r in data["rows"])  # the float64 rows ran in float64: error ~1e-16
    assert max(r["measured"] for r in data["rows"] if "float64" in r["sizes"]) < 1e-10


def test_unknown_part_or_preset_is_a_value_error():
    with pytest.raises(ValueError, match="unknown theory part"):
        checks.run_part("nope")
    with pytest.raises(ValueError, match="unknown preset"):
        checks.run_part("identities", model="nope")


def test_theory_script_writes_the_json_table_and_refuses_an_unknown_preset(tmp_path, capsys):
    script = load_script(Path(__file__).resolve().parent.parent / "scripts" / "theory.py")
    assert script.main(["identities", "--model-dir", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert script.main(["identities", "--model-dir", "tiny", "--out", str(tmp_path / "t.json")]) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    assert len(data["rows"]) == 8 and all(r["holds"] for r in data["rows"])
    assert "8 checks, 0 failing" in capsys.readouterr().out


def test_theory_py_checks_out_before_computing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        load_script(Path(__file__).resolve().parent.parent / "scripts" / "theory.py").main(["all", "--out", str(tmp_path)])
    assert e.value.code == 2 and "is a directory" in capsys.readouterr().err
