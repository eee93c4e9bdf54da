"""Deployments, connections and their loader, shared by the gateway, processor and aggregator.

Typical use at start-up::

    settings = load_settings(MyServiceSettings)
    folder = load_deployment_folder(settings.deployments_dir)
    folder.deployments    # dict name -> Deployment, every file that loaded
    folder.broken         # each file that did not, with all its problems
    folder.connections    # dict name -> Connection

A service serves what loaded and reports the rest (folder.py): one broken deployment never takes
the others down. ``load_deployments`` is the all-or-nothing form for tools and tests: any problem
raises :class:`DeploymentConfigError`, whose message lists each bad field as
``<file>: <field path>: <reason>``. See docs/deployments.md for the schema.
"""

from shared.deployments.base import (
    DEFAULT_SCORE_THRESHOLD,
    METRIC_COLUMNS,
    METRICS,
    QUALITY_STATISTICS,
)
from shared.deployments.connections import (
    CONNECTIONS_FILE,
    Connection,
    create_openai_client,
    load_connections,
    load_connections_file,
    openai_client_kwargs,
    read_connections_file,
)
from shared.deployments.destinations import (
    DESTINATION_KINDS,
    Destination,
    PagerDutyDestination,
    SlackDestination,
    TeamsDestination,
    WebhookDestination,
)
from shared.deployments.errors import (
    ConnectionKeyMissingError,
    DeploymentConfigError,
    Problem,
)
from shared.deployments.evaluation import ColumnMapping, Evaluation, Judge
from shared.deployments.evaluators import EvaluatorConfig, PassRule, Scale
from shared.deployments.folder import (
    BrokenDeployment,
    DeploymentFolder,
    load_deployment_folder,
    load_deployments,
)
from shared.deployments.loader import (
    FLOW_FILE,
    deployment_files,
    load_api_keys_file,
    load_deployment,
    read_flow_interface,
    save_api_keys_file,
)
from shared.deployments.monitors import Monitor, Notification, format_duration, parse_duration
from shared.deployments.schema import Deployment, Redaction, Variant

__all__ = [
    "CONNECTIONS_FILE",
    "DESTINATION_KINDS",
    "DEFAULT_SCORE_THRESHOLD",
    "FLOW_FILE",
    "METRICS",
    "METRIC_COLUMNS",
    "QUALITY_STATISTICS",
    "BrokenDeployment",
    "ColumnMapping",
    "Connection",
    "ConnectionKeyMissingError",
    "Deployment",
    "DeploymentConfigError",
    "DeploymentFolder",
    "Destination",
    "Evaluation",
    "EvaluatorConfig",
    "PassRule",
    "Scale",
    "Judge",
    "Monitor",
    "Notification",
    "PagerDutyDestination",
    "Problem",
    "Redaction",
    "SlackDestination",
    "TeamsDestination",
    "Variant",
    "WebhookDestination",
    "create_openai_client",
    "deployment_files",
    "format_duration",
    "load_api_keys_file",
    "load_connections",
    "load_connections_file",
    "load_deployment",
    "load_deployment_folder",
    "load_deployments",
    "openai_client_kwargs",
    "parse_duration",
    "read_connections_file",
    "read_flow_interface",
    "save_api_keys_file",
]
