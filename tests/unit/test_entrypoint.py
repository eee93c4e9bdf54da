"""shared/entrypoint.py: how every service's ``python -m`` starts, and how it refuses to."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.entrypoint import EXIT_INTERRUPTED, EXIT_REFUSED, run_service
from shared.eventloop import loop_name
from shared.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _keep_the_event_loop_policy() -> object:
    """run_service chooses the process's event loop; the tests after these keep pytest's."""
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


async def _running_loop_name() -> str:
    return loop_name(asyncio.get_running_loop())


def test_services_run_on_uvloop_unless_told_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_TELEMETRY__LOG_LEVEL", "ERROR")
    ran_on: list[str] = []
    # asyncio.run, as the processor and the gateway's workers call it; aiohttp's web.run_app
    # makes its loop through the same policy.
    assert run_service("svc", ServiceSettings, lambda s: ran_on.append(asyncio.run(_running_loop_name()))) == 0
    monkeypatch.setenv("PROMPTPULSE_EVENT_LOOP", "asyncio")
    assert run_service("svc", ServiceSettings, lambda s: ran_on.append(asyncio.run(_running_loop_name()))) == 0
    assert ran_on == ["uvloop", "asyncio"]
    monkeypatch.setenv("PROMPTPULSE_EVENT_LOOP", "trio")
    assert run_service("svc", ServiceSettings, lambda s: ran_on.append("served")) == EXIT_REFUSED
    assert ran_on == ["uvloop", "asyncio"]


def test_serve_gets_the_settings_and_its_status_is_the_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_TELEMETRY__LOG_LEVEL", "ERROR")
    seen: list[ServiceSettings] = []
    assert run_service("svc", ServiceSettings, lambda s: seen.append(s)) == 0  # None is 0
    assert seen[0].telemetry.log_level == "ERROR" and logging.getLogger().level == logging.ERROR
    assert run_service("svc", ServiceSettings, lambda s: 1) == 1


def test_invalid_settings_are_refused_before_serving(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PROMPTPULSE_TELEMETRY__LOG_LEVEL", "LOUD")
    served: list[ServiceSettings] = []
    assert run_service("svc", ServiceSettings, served.append) == EXIT_REFUSED
    assert served == []
    err = capsys.readouterr().err
    assert err.startswith("svc: invalid settings: PROMPTPULSE_TELEMETRY__LOG_LEVEL") and err.count("\n") == 1


class FolderLocked(Exception):
    pass


def test_a_refusal_is_its_message_other_errors_propagate(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(settings: ServiceSettings) -> None:
        raise FolderLocked("spool folder /x is held by another gateway")

    assert run_service("svc", ServiceSettings, refuse, refusals=(FolderLocked,)) == EXIT_REFUSED
    assert capsys.readouterr().err == "svc: spool folder /x is held by another gateway\n"
    with pytest.raises(FolderLocked):  # not declared a refusal: a crash, with its traceback
        run_service("svc", ServiceSettings, refuse)


def test_ctrl_c_exits_130_and_chatty_loggers_are_kept_at_warning() -> None:
    def interrupted(settings: ServiceSettings) -> None:
        raise KeyboardInterrupt

    logging.getLogger("chatty.client").setLevel(logging.DEBUG)
    assert run_service("svc", ServiceSettings, interrupted, quiet_loggers=["chatty.client"]) == EXIT_INTERRUPTED
    assert logging.getLogger("chatty.client").level == logging.WARNING


def test_each_service_refuses_a_bad_setting_with_its_name_and_status_2() -> None:
    # The four start together: each spends seconds importing its service (faust, prompt flow).
    services = ("gateway", "processor", "aggregator", "llmsim")
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_")}
    running = {service: subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"], cwd=REPO, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=base | {f"PROMPTPULSE_{service.upper()}__PORT": "eighty"})
        for service in services}
    for service, process in running.items():
        _, stderr = process.communicate(timeout=60)
        variable = f"PROMPTPULSE_{service.upper()}__PORT"
        assert process.returncode == 2, (service, stderr)
        assert stderr.startswith(f"{service}: invalid settings: {variable}: "), stderr
        assert stderr.count("\n") == 1 and "Traceback" not in stderr
