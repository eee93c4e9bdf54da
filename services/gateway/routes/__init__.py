"""The gateway's HTTP endpoints, one module per concern; services/gateway/app.py mounts them.

Kept free of imports so that modules below can import the application keys without a cycle.
"""
