"""The gateway: runs prompt-flow flows behind authenticated endpoints and publishes inference events.

``shared.flow`` is the flow runtime (loading ``flow.dag.yaml`` folders and executing them);
the HTTP endpoint and event publishing build on it.
"""
