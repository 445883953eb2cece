from prefixlab.results import summarize
from prefixlab.selection import mark_selected, selected


def rec(lr, val_em, val_loss, seed=0, P=1, status="ok", test_em=0.5):
    return dict(task="add1", method="prefix", init="sample_vocab", context_len=P, group="add1/prefix", seed=seed,
                lr=lr, val_exact_match=val_em, val_loss=val_loss, status=status, exact_match=test_em,
                token_accuracy=test_em, trainable_params=32, steps=100, steps_used=50)


def test_the_best_validation_exact_match_wins_then_the_lower_loss_then_the_smaller_rate():
    rs = mark_selected([rec(1e-3, 0.8, 0.2), rec(1e-2, 0.9, 0.5), rec(1e-1, 0.9, 0.3)])
    assert [r["selected"] for r in rs] == [False, False, True]
    tie = mark_selected([rec(1e-2, 0.9, 0.3), rec(1e-3, 0.9, 0.3)])
    assert [r["selected"] for r in tie] == [False, True]


def test_test_scores_play_no_part_and_diverged_runs_lose():
    rs = mark_selected([rec(1e-3, 0.5, 0.4, test_em=1.0), rec(1e-2, 0.6, 0.4, test_em=0.0),
                        rec(1e-1, None, None, status="diverged")])
    assert [r["selected"] for r in rs] == [False, True, False]


def test_one_run_selected_per_seed_and_length():
    rs = mark_selected([rec(lr, em, 0.1, seed=s, P=p) for s in (0, 1) for p in (1, 2)
                        for lr, em in ((1e-3, 0.1 * s + 0.1 * p), (1e-2, 0.25))])
    assert len(selected(rs)) == 4
    assert {(r["seed"], r["context_len"], r["lr"]) for r in selected(rs)} == {
        (0, 1, 1e-2), (0, 2, 1e-2), (1, 1, 1e-2), (1, 2, 1e-3)}


def test_summary_rows_show_the_selected_runs_and_their_rates():
    rs = mark_selected([rec(1e-3, 0.9, 0.1, seed=0, test_em=1.0), rec(1e-2, 0.1, 0.1, seed=0, test_em=0.0),
                        rec(1e-3, 0.1, 0.1, seed=1, test_em=0.0), rec(1e-2, 0.9, 0.1, seed=1, test_em=1.0)])
    (row,) = summarize(rs)
    assert row["n_seeds"] == 2 and row["exact_match"] == 1.0 and row["lr"] == (1e-3, 1e-2)
    old = [{k: v for k, v in r.items() if k != "selected"} for r in rs]  # before selection: a row per lr
    assert len(summarize(old)) == 2
