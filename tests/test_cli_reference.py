"""docs/reference/cli.md is every script's current --help."""

from prefixlab.cli_reference import PAGE, SCRIPTS, render


def test_cli_page_is_current():
    page = render()
    for script in SCRIPTS:
        assert f"## `scripts/{script}`" in page and "usage:" in page.split(f"## `scripts/{script}`")[1]
    assert PAGE.read_text() == page, "docs/reference/cli.md is stale: run python scripts/cli_reference.py"
