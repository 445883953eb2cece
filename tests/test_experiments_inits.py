from prefixlab.experiments import inits
from prefixlab.methods import get_method


def _records(cells: dict) -> list[dict]:
    """{(task, method, init): [exact match per seed]} -> selected records as a sweep writes them."""
    return [dict(task=task, method=method, init=init, seed=seed, exact_match=x, selected=True)
            for (task, method, init), xs in cells.items() for seed, x in enumerate(xs)]


def test_the_text_ends_in_the_tasks_own_output():
    tokens = inits.text("sort_desc", 10)
    assert list(tokens) == sorted(tokens, reverse=True) and len(tokens) == 10  # the output half of a demonstration


def test_every_init_is_one_the_method_has():
    for method, modes in inits.INITS.items():
        for mode in modes:
            get_method(method, init_mode=mode, init_tokens=(1, 2))


def test_the_claim_holds_on_a_spread_of_ten_points_or_more():
    cells = {("sort_desc", "prefix", "normal"): [0.5, 0.6, 0.7], ("sort_desc", "prefix", "zero"): [0.4, 0.5, 0.6],
             ("sort_desc", "prefix_kv", "normal"): [0.50, 0.55, 0.60], ("sort_desc", "prefix_kv", "text"): [0.5, 0.6, 0.6]}
    claims = {c.statement.split(" on ")[0]: c for c in inits.claims(_records(cells), "tiny")}
    assert claims["inits: prefix P=4"].verdict is True  # 60 % vs 50 %: exactly 10 pp
    assert claims["inits: prefix_kv P=4"].verdict is False  # 55 % vs 56.7 %
    assert "soft_prompt" not in " ".join(claims)  # no runs, no claim
    table = inits.markdown_table(_records(cells))
    assert "| sort_desc | prefix | 60.0 % [" in table and "| add2 | prefix | n/a |" in table


def test_the_figure_has_a_panel_per_task_with_runs(tmp_path):
    cells = {("sort_desc", "prefix", "normal"): [0.0, 0.6, 0.0], ("sort_desc", "prefix_kv", "zero"): [0.9, 0.9, 0.8]}
    path = inits.figure(_records(cells), tmp_path / "inits.png")
    assert path.stat().st_size > 10_000
