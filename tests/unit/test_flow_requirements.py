"""Which file holds a flow's requirements and how its lines are split (shared/flow/requirements.py)."""

from __future__ import annotations

from pathlib import Path

from shared.flow.requirements import read_flow_requirements, requirements_file


def _flow(folder: Path, dag: str = "inputs: {}\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.dag.yaml").write_text(dag)
    return folder


def test_the_file_the_flow_names_wins_over_requirements_txt(tmp_path: Path) -> None:
    flow = _flow(tmp_path / "f", "environment:\n  python_requirements_txt: deps/reqs.txt\n")
    (flow / "requirements.txt").write_text("other\n")
    assert requirements_file(flow) == flow / "deps" / "reqs.txt"


def test_requirements_txt_in_the_folder_is_the_default_and_none_when_absent(tmp_path: Path) -> None:
    flow = _flow(tmp_path / "f")
    assert requirements_file(flow) is None
    (flow / "requirements.txt").write_text("bs4\n")
    assert requirements_file(flow) == flow / "requirements.txt"


def test_lines_are_split_into_wanted_stand_ins_ignored_options_and_problems(tmp_path: Path) -> None:
    flow = _flow(tmp_path / "f")
    (flow / "base.txt").write_text("jinja2>=3  # shared\n")
    (flow / "requirements.txt").write_text(
        "# comment\n"
        "--extra-index-url https://example.invalid/simple\n"
        "promptflow[azure]\n"
        "promptflow-tools\n"
        "-r base.txt\n"
        "bs4\n"
        "windows-only; sys_platform == 'win32'\n"
        "not a requirement!!\n"
    )
    found = read_flow_requirements("f", flow)
    assert [str(entry.requirement) for entry in found.wanted] == ["jinja2>=3", "bs4"]
    assert [entry.name for entry in found.stood_in] == ["promptflow", "promptflow-tools"]
    assert found.wanted[0].where.endswith("base.txt:1")
    assert len(found.ignored) == 1 and "--extra-index-url" in found.ignored[0]
    assert len(found.problems) == 1 and "requirements.txt:8" in found.problems[0]


def test_a_named_file_that_is_missing_is_a_problem_naming_it(tmp_path: Path) -> None:
    flow = _flow(tmp_path / "f", "environment:\n  python_requirements_txt: nope.txt\n")
    found = read_flow_requirements("f", flow)
    assert found.problems and "nope.txt" in found.problems[0]
