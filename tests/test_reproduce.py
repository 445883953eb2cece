import subprocess
import sys
from pathlib import Path

from tests.helpers import load_script

REPRODUCE = Path(__file__).resolve().parent.parent / "scripts" / "reproduce.py"


def test_unknown_section_is_refused(tmp_path):
    r = subprocess.run([sys.executable, str(REPRODUCE), "--sections", "exp1,exp9", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown section" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_claims_table_keeps_four_cells_when_a_number_has_bars(tmp_path):
    r = load_script(REPRODUCE)
    rep = r.Report(tmp_path, "tiny")
    rep.claim("content attention", "max |Δ| = 1.7e-06", "identical", True)
    rep.write(60.0)
    row = next(l for l in (tmp_path / "report.md").read_text().splitlines() if l.startswith("| content"))
    cells = [c for c in row.replace("\\|", "").split("|")[1:-1]]
    assert len(cells) == 4 and cells[-1].strip() == "reproduced"


def test_section_times_add_up_over_resumed_runs(tmp_path):
    r = load_script(REPRODUCE)
    for _ in range(2):
        timing = r.SectionTiming(tmp_path / "timing.json")
        with timing.measure("exp1"):
            pass
    first = r.SectionTiming(tmp_path / "timing.json").seconds["exp1"]
    timing = r.SectionTiming(tmp_path / "timing.json")
    try:
        with timing.measure("exp1"):
            raise KeyboardInterrupt  # an interrupted section still adds its time
    except KeyboardInterrupt:
        pass
    assert r.SectionTiming(tmp_path / "timing.json").seconds["exp1"] > first > 0
