"""The repository's promises about itself: CI runs exactly the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = next(line for line in ci_lines if "pytest" in line)
    assert test_command in readme
    assert readme.index(test_command) < readme.index("jitnet is a JIT"), "the command opens the README"
