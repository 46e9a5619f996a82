"""The project's entry points: README set-up commands and CI call the same test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_setup_commands_and_ci_runs_the_second():
    first, second = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()[:2]]
    assert first.startswith("python3 -m venv .venv") and first.endswith(".venv/bin/dmireid train")
    assert second.startswith("python3 -m venv .venv") and "pytest" in second
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert second in ci
