import csv
import json
from pathlib import Path

from prefixlab.results import (CSV_LEAD, CSV_ORDER, append_jsonl, check_record, csv_columns, format_table,
                               loss_curve, mean_std_ci, read_jsonl, read_jsonl_repairing, summarize, write_csv)


def rec(seed, em, method="prefix", p=1):
    return dict(task="sort_desc", method=method, context_len=p, lr=5e-4, seed=seed, exact_match=em,
                token_accuracy=em, trainable_params=96, steps=10, wall_s=1.0)


def test_jsonl_round_trip_whole_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    for s in range(3):
        append_jsonl(path, rec(s, 0.1 * s))
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["seed"] == i for i, line in enumerate(lines))
    assert read_jsonl(path)[2]["exact_match"] == 0.2
    write_csv(tmp_path / "r.csv", read_jsonl(path))
    assert (tmp_path / "r.csv").read_text().count("\n") == 4


def test_summary_mean_and_std_over_seeds():
    rows = summarize([rec(0, 0.2), rec(1, 0.4), rec(0, 1.0, p=4)])
    by_len = {r["context_len"]: r for r in rows}
    assert abs(by_len[1]["exact_match"] - 0.3) < 1e-12 and abs(by_len[1]["exact_match_std"] - 0.1414) < 1e-3
    assert by_len[4]["n_seeds"] == 1 and by_len[4]["exact_match_std"] == 0.0
    assert "30.0 ±" in format_table([rec(0, 0.2), rec(1, 0.4)])


def test_group_written_in_one_write_and_torn_tail_repaired(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [rec(0, 0.1), rec(1, 0.2)])
    with open(path, "a") as f:
        f.write('{"seed": 2, "exact_ma')  # a kill inside a write
    messages = []
    assert [r["seed"] for r in read_jsonl_repairing(path, messages.append)] == [0, 1]
    assert path.read_text().count("\n") == 2 and not path.read_text().endswith("ma") and messages


def test_interval_and_diverged_runs():
    m, sd, half = mean_std_ci([0.2, 0.4, None])
    assert abs(m - 0.3) < 1e-12 and abs(half - 12.706 * sd / 2**0.5) < 1e-9
    diverged = dict(rec(2, None), status="diverged")
    row = summarize([rec(0, 0.2), rec(1, 0.4), diverged])[0]
    assert row["n_seeds"] == 3 and row["n_diverged"] == 1 and abs(row["exact_match"] - 0.3) < 1e-12
    assert "1 diverged" in format_table([rec(0, 0.2), diverged])


def test_loss_curve_downsamples_and_csv_flattens(tmp_path):
    curve = loss_curve(list(range(1000)), points=10)
    assert len(curve) == 10 and curve[0] == 49.5
    write_csv(tmp_path / "r.csv", [dict(rec(0, 0.5), cross_exact_match={"add1": 0.1, "add2": None}, loss_curve=curve,
                                        final_loss=0.25)])
    (row,) = csv.DictReader(open(tmp_path / "r.csv"))
    assert row["cross_exact_match_pct"] == "add1=10.0;add2=" and "loss_curve" not in row
    assert row["exact_match_pct"] == "50.0" and row["final_loss_nats"] == "0.25"


def test_csv_columns_are_the_union_of_the_record_keys(tmp_path):
    """A method's own settings come after `method`, in the order first seen; a key no record has has no column;
    the rest in CSV_ORDER (what sweeps.md documents)."""
    records = [dict(rec(0, 0.5), init="normal", cross_exact_match={"add1": 0.1}, status="ok", group="sort_desc/prefix"),
               dict(rec(1, 0.2, method="lora", p=None), task="add1", lora_rank=4, lora_targets="o,fc", loss_curve=[1.0])]
    write_csv(tmp_path / "r.csv", records)
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["task", "method", "init", "lora_rank", "lora_targets"]
    assert header[5:] == ["context_len", "lr", "steps", "seed", "status", "trainable_params", "exact_match_pct",
                          "token_accuracy_pct", "cross_exact_match_pct", "wall_s", "group"]
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert rows[0]["lora_rank"] == "" and rows[1]["lora_rank"] == "4" and rows[1]["init"] == ""
    assert csv_columns([]) == []
    documented = (Path(__file__).resolve().parent.parent / "docs" / "reference" / "sweeps.md").read_text()
    assert all(f"`{c}`" in documented for c in CSV_LEAD + CSV_ORDER)


def test_groups_of_one_method_stay_apart_in_the_summary():
    """Defect A (468b134: GROUP_KEYS named only LoRA and init settings): two groups of one method that differ in
    any other setting are two rows, each over its own seeds, with labels that tell them apart."""
    records = [dict(rec(s, em), group=f"sort_desc/prefix_kv{tag}", method="prefix_kv", projection=bool(tag))
               for s in (0, 1) for tag, em in (("", 0.2), ("-projection", 0.8))]
    rows = summarize(records)
    assert [(r["n_seeds"], round(r["exact_match"], 6)) for r in rows] == [(2, 0.2), (2, 0.8)]
    table = format_table(records)
    assert " prefix_kv " in table and " prefix_kv-projection " in table


def test_record_schema_allows_a_methods_own_columns():
    ok = dict(rec(0, 0.5), group="sort_desc/x", any_setting="value")
    assert check_record(ok, "here", need_group=True) is ok


def test_console_table_hides_untuned_settings():
    base = dict(rec(0, 0.1, method="none", p=None), lr=5e-4, steps=1000)
    line = format_table([base]).splitlines()[2]
    assert "5e-04" not in line and "1000" not in line


def test_console_table_widens_for_per_seed_rates_and_early_stops():
    runs = [dict(rec(s, 0.5), lr=lr, steps=2000, steps_used=used, selected=True) for s, lr, used in ((0, 5e-4, 800), (1, 5e-3, 900))]
    header, rule, line = format_table(runs).splitlines()
    assert "5e-04/5e-03" in line and "850/2000" in line
    assert len(line) <= len(rule) == len(header)  # the columns stay under their headers
    assert line.index("5e-04/5e-03") + len("5e-04/5e-03") == header.index("lr") + len("lr")
