import json

from prefixlab.results import append_jsonl, format_table, read_jsonl, summarize, write_csv


def rec(seed, em, method="prefix", p=1):
    return dict(task="sort_desc", method=method, context_len=p, lora_rank=None, lora_targets=None, lr=5e-4,
                seed=seed, exact_match=em, token_accuracy=em, trainable_params=96, steps=10)


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
