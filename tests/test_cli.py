"""prefixlab/cli.py: every script answers bad input with one line and exit status 2, never argparse's usage block."""

from pathlib import Path

import pytest

from tests.helpers import load_script

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("script, args", [
    ("sweep.py", ["--no-such-flag"]), ("report.py", []), ("report.py", ["a", "b"]), ("reproduce.py", ["--lanes", "x"]),
    ("theory.py", []), ("theory.py", ["identities"]), ("bench.py", ["--steps", "many"]), ("merge.py", []),
    ("parity.py", ["--profile", "huge"]),
])
def test_bad_input_is_one_line_exit_2(script, args, capsys):
    with pytest.raises(SystemExit) as e:
        load_script(SCRIPTS / script).main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "error: " in err and "usage:" not in err, err
