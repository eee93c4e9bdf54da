"""The checked-in generated code is exactly what `python -m shared.events.generate` produces
from proto/, and it runs on every protobuf runtime pyproject.toml allows."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from shared.events import generate
from shared.events.gen.promptpulse.v1 import events_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION_LINE = re.compile(r"^# Protobuf Python Version: (\S+)$", re.MULTILINE)
RUNTIME_CHECK = re.compile(
    r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),"
)


def generated_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".pyi")
    }


def protoc_version(files: dict[str, bytes]) -> str:
    text = files.get("promptpulse/v1/events_pb2.py", b"").decode()
    match = VERSION_LINE.search(text)
    return match.group(1) if match else "unknown"


def test_regenerating_gives_the_checked_in_files(tmp_path):
    # The real command, in a fresh process, as a developer runs it.
    result = subprocess.run(
        [sys.executable, "-m", "shared.events.generate", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    fresh = generated_files(tmp_path)
    checked_in = generated_files(generate.GEN_DIR)

    assert protoc_version(fresh) == protoc_version(checked_in), (
        "the installed grpcio-tools bundles another protoc than the one that generated the "
        "checked-in code: install the grpcio-tools version pinned in pyproject's dev extras"
    )
    assert sorted(fresh) == sorted(checked_in)
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert stale == [], "proto/ changed: run `python -m shared.events.generate` and commit"


def test_generator_removes_modules_of_deleted_protos(tmp_path):
    stale = tmp_path / "promptpulse" / "v1" / "retired_pb2.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# from a .proto that no longer exists\n")
    unrelated = tmp_path / "README.md"
    unrelated.write_text("kept\n")

    kept = Path("promptpulse/v1/events_pb2.py")

    changes = generate.write({kept: "# generated\n"}, tmp_path)

    assert not stale.exists()
    assert unrelated.exists()
    assert (tmp_path / kept).read_text() == "# generated\n"
    assert changes == [f"wrote {tmp_path / kept}", f"removed {stale}"]
    assert generate.write({kept: "# generated\n"}, tmp_path) == []


def test_generated_modules_import_as_a_package():
    # No sys.path entry for gen/: the module and its classes live under shared.events.gen.
    assert events_pb2.__name__ == "shared.events.gen.promptpulse.v1.events_pb2"
    assert events_pb2.Evaluation.__module__ == events_pb2.__name__
    assert events_pb2.DESCRIPTOR.package == "promptpulse.v1"


def test_generated_code_runs_on_the_oldest_protobuf_pyproject_allows():
    # Recent protoc versions make the generated module refuse any runtime older than the
    # protoc itself (a VersionError at import), so the floor in pyproject must follow it.
    text = (generate.GEN_DIR / "promptpulse" / "v1" / "events_pb2.py").read_text()
    check = RUNTIME_CHECK.search(text)
    needed = tuple(int(part) for part in check.groups()) if check else (0, 0, 0)

    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    spec = next(d for d in dependencies if re.match(r"protobuf\b", d))
    floor = re.search(r">=\s*([\d.]+)", spec)
    assert floor, f"pyproject's {spec!r} has no lower bound"
    allowed = tuple(int(part) for part in (floor.group(1).split(".") + ["0", "0"])[:3])

    assert allowed >= needed, (
        f"the generated code needs protobuf >= {'.'.join(map(str, needed))}, "
        f"but pyproject allows {spec!r}"
    )
