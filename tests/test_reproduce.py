import subprocess
import sys
from pathlib import Path

REPRODUCE = Path(__file__).resolve().parent.parent / "scripts" / "reproduce.py"


def test_unknown_section_is_refused(tmp_path):
    r = subprocess.run([sys.executable, str(REPRODUCE), "--sections", "exp1,exp9", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown section" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
