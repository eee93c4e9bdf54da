"""The demo traffic generator's settings, and where its API keys come from.

``PROMPTPULSE_GATEWAY_URL``, ``PROMPTPULSE_DEMO_API_KEY`` (and ``_PROXY_API_KEY``) and
``PROMPTPULSE_DEMO__*`` (:class:`TrafficSection`); a key not set there is read from the key file the
gateway writes for the demo deployments (shared/demo_key.py), and read again after a 401. Apart
from traffic.py, which sends the requests: this is what ``python -m services.demo`` reads before
it starts one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from shared.settings import ServiceSettings

REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_KEY_FILE = REPO_DIR / ".local" / "keys" / "demo.key"


class TrafficSection(BaseModel):
    """How much traffic, of what kind (``PROMPTPULSE_DEMO__*``)."""

    deployment: str = Field("demo", min_length=1, description="Deployment the questions go to.")
    rate: float = Field(
        4.0,
        gt=0,
        le=1000,
        description="Requests per second, evenly spaced. At the demo's 10% sampling, 4/s gives "
        "each of two variants about 12 judged answers a minute.",
    )
    stream_share: float = Field(
        0.25, ge=0, le=1, description="Share of requests made with ?stream=true (SSE)."
    )
    feedback_share: float = Field(
        0.05, ge=0, le=1, description="Share of answered requests that get an end-user rating."
    )
    proxy_share: float = Field(
        0.25, ge=0, le=1, description="Questions asked through the proxy deployment with the openai SDK "
        "(services/demo/proxy_users.py), per question to the flow, on top of them: 0.25 at rate 4 adds "
        "one a second. 0 turns it off.",
    )
    proxy_deployment: str = Field("demo-proxy", min_length=1, description="The proxy deployment (its key decides).")
    proxy_model: str = Field("llmsim-chat", min_length=1, description="The model the proxied calls name.")
    status_every_seconds: float = Field(
        10.0, gt=0, le=3600, description="How often a one-line status is printed."
    )
    max_in_flight: int = Field(
        64,
        ge=1,
        le=10_000,
        description="Requests waiting for an answer at most; beyond it a tick is skipped (and "
        "counted), so a slow gateway is not buried under a growing pile of requests.",
    )
    request_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="A request without its whole answer by then fails."
    )
    backoff_initial_seconds: float = Field(
        1.0, gt=0, le=600, description="First wait before probing a gateway that went away."
    )
    backoff_max_seconds: float = Field(
        30.0, gt=0, le=3600, description="Longest wait between probes; each failed probe doubles it."
    )
    duration_seconds: float | None = Field(
        None, gt=0, description="Stop after this long; unset runs until SIGINT or SIGTERM."
    )
    seed: int | None = Field(None, description="Seed of the question, stream and rating draws.")


class DemoSettings(ServiceSettings):
    """Settings of ``python -m services.demo``."""

    gateway_url: str = Field(
        "http://127.0.0.1:8080", min_length=1, description="The gateway (PROMPTPULSE_GATEWAY_URL)."
    )
    demo_api_key: SecretStr | None = Field(
        None,
        description="The deployment's API key (PROMPTPULSE_DEMO_API_KEY); else it is read from "
        "the demo key file the gateway writes (shared/demo_key.py).",
    )
    demo_proxy_api_key: SecretStr | None = Field(
        None,
        description="The proxy deployment's key (PROMPTPULSE_DEMO_PROXY_API_KEY); else read from its key file.",
    )
    demo: TrafficSection = Field(default_factory=TrafficSection)


class NoApiKey(RuntimeError):
    """No API key to send: says where one was looked for."""


@dataclass
class KeySource:
    """The API key: a fixed one, or the contents of a key file, read again on demand."""

    fixed: str | None = None
    path: Path | None = None

    def get(self) -> str:
        if self.fixed:
            return self.fixed
        if self.path is None:
            raise NoApiKey("no API key: set PROMPTPULSE_DEMO_API_KEY")
        try:
            key = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise NoApiKey(
                f"no API key: {self.path} cannot be read ({exc.strerror}); start the gateway "
                "once (it writes the demo key) or set PROMPTPULSE_DEMO_API_KEY"
            ) from None
        if not key:
            raise NoApiKey(f"no API key: {self.path} is empty")
        return key


def key_source(settings: DemoSettings, key_file: Path | None = None) -> KeySource:
    """Where the key comes from: ``key_file`` (a flag), else the environment, else the demo
    deployment's key file (``.local/keys/demo.key`` for the local stack)."""
    if key_file is not None:
        return KeySource(path=key_file)
    if settings.demo_api_key is not None and settings.demo_api_key.get_secret_value().strip():
        return KeySource(fixed=settings.demo_api_key.get_secret_value().strip())
    if settings.demo.deployment == "demo":
        from shared.demo_key import demo_keys_file

        try:
            keys_file = demo_keys_file(settings.deployments_dir)
        except Exception:  # noqa: BLE001  (a broken deployment file: the gateway reports it)
            keys_file = None
        return KeySource(path=keys_file.with_suffix(".key") if keys_file else DEFAULT_KEY_FILE)
    return KeySource()


def proxy_key_source(settings: DemoSettings) -> KeySource:
    """The proxy deployment's key: the environment, else its key file (``.local/keys/demo-proxy.key``)."""
    if settings.demo_proxy_api_key is not None and settings.demo_proxy_api_key.get_secret_value().strip():
        return KeySource(fixed=settings.demo_proxy_api_key.get_secret_value().strip())
    from shared.demo_key import demo_keys_file

    try:
        keys_file = demo_keys_file(settings.deployments_dir, settings.demo.proxy_deployment)
    except Exception:  # noqa: BLE001  (a broken deployment file: the gateway reports it)
        keys_file = None
    return KeySource(path=keys_file.with_suffix(".key") if keys_file else DEFAULT_KEY_FILE.with_name(
        f"{settings.demo.proxy_deployment}.key"))
