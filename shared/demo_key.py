"""The local demo deployment's API key: one key, made once, readable by the services and the CLI.

The deployment named ``demo`` keeps its key hashes in its ``api_keys_file``
(``.local/keys/demo.yaml``, git-ignored). Its key is, in order:

1. ``PROMPTPULSE_DEMO_API_KEY`` when set (then nothing but the hash is written);
2. else the plain key kept beside the hashes in ``demo.key`` (mode 0600, git-ignored);
3. else a new key, written there.

:func:`ensure_demo_key` makes the hash file agree with that key (record id ``demo``), so the
gateway accepts it; ``python -m shared.demo_key`` prints it for scripts and the README. It lives
in shared/ because the gateway writes the key and the demo's traffic generator reads it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from shared.apikeys import ApiKeyRecord, generate_api_key, hash_api_key, match_api_key
from shared.deployments import (
    deployment_files,
    load_api_keys_file,
    load_deployment,
    save_api_keys_file,
)

DEMO_DEPLOYMENT = "demo"
DEMO_KEY_ID = "demo"
ENV_VAR = "PROMPTPULSE_DEMO_API_KEY"
# The demo's proxy deployment (docs/proxy.md) gets its key the same way, from its own variable.
DEMO_PROXY_DEPLOYMENT = "demo-proxy"
PROXY_ENV_VAR = "PROMPTPULSE_DEMO_PROXY_API_KEY"
LOCAL_KEYS = {DEMO_DEPLOYMENT: ENV_VAR, DEMO_PROXY_DEPLOYMENT: PROXY_ENV_VAR}  # deployment -> its variable


@dataclass(frozen=True)
class DemoKey:
    key: str
    keys_file: Path
    key_file: Path | None  # where the plain key is kept; None when it comes from the environment
    created: bool  # a new key was generated now


def find_deployment_file(deployments_dir: Path, name: str) -> Path | None:
    """The file of the deployment called ``name`` (its ``name:`` field, else its file stem)."""
    if not Path(deployments_dir).is_dir():
        return None  # the loader reports a missing folder, naming the setting
    for path in deployment_files(Path(deployments_dir)):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the loader reports broken files; here we only look for one name
        declared = data.get("name") if isinstance(data, dict) else None
        if (declared if isinstance(declared, str) else path.stem) == name:
            return path
    return None


def demo_keys_file(deployments_dir: Path, name: str = DEMO_DEPLOYMENT) -> Path | None:
    path = find_deployment_file(deployments_dir, name)
    if path is None:
        return None
    return load_deployment(path, check_flow=False).api_keys_file


def _read_or_create_key(key_file: Path) -> tuple[str, bool]:
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = generate_api_key()
    try:
        # O_EXCL: when the gateway and the CLI race, one creates the key and the other reads it.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = key_file.read_text(encoding="utf-8").strip()
        if text:
            return text, False
        key_file.unlink()  # an empty file left by a crash: start again
        return _read_or_create_key(key_file)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return key, True


def ensure_demo_key(deployments_dir: Path, environ: Mapping[str, str] | None = None,
                    name: str = DEMO_DEPLOYMENT) -> DemoKey | None:
    """Make the demo deployment's key (or ``name``'s, one of LOCAL_KEYS) exist and be accepted; None
    without that deployment (or when it has no ``api_keys_file``). Raises DeploymentConfigError for
    a broken file."""
    environ = os.environ if environ is None else environ
    keys_file = demo_keys_file(deployments_dir, name)
    if keys_file is None:
        return None
    from_env = (environ.get(LOCAL_KEYS[name]) or "").strip()
    if from_env:
        key, key_file, created = from_env, None, False
    else:
        key_file = keys_file.with_suffix(".key")
        key, created = _read_or_create_key(key_file)
    records = load_api_keys_file(keys_file)
    if match_api_key(key, records) is None:
        record = ApiKeyRecord(id=DEMO_KEY_ID, hash=hash_api_key(key), created=datetime.now(UTC).replace(microsecond=0))
        save_api_keys_file(keys_file, [r for r in records if r.id != DEMO_KEY_ID] + [record])
    return DemoKey(key, keys_file, key_file, created)


def main(argv: list[str] | None = None) -> int:
    """Print the demo key (making it if needed): ``curl -H "api-key: $(... demo_key)" ...``;
    ``python -m shared.demo_key demo-proxy`` prints the proxy deployment's."""
    from shared.deployments import DeploymentConfigError
    from shared.settings import ServiceSettings, SettingsError, load_settings

    args = sys.argv[1:] if argv is None else argv
    name = args[0] if args else DEMO_DEPLOYMENT
    if name not in LOCAL_KEYS:
        print(f"demo key: {name!r} is not one of {', '.join(LOCAL_KEYS)}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(ServiceSettings)
        demo = ensure_demo_key(settings.deployments_dir, name=name)
    except (SettingsError, DeploymentConfigError, OSError) as exc:
        print(f"demo key: {exc}", file=sys.stderr)
        return 2
    if demo is None:
        print(f"demo key: no deployment named {name!r} with an api_keys_file in "
              f"{settings.deployments_dir}", file=sys.stderr)
        return 1
    print(demo.key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
