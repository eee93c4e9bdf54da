"""The aggregator's query API: figures, requests, traces, monitors, alerts, runs, live SSE.

An aiohttp sub-application mounted at ``/v1`` (``wiring.create_api``), with its own key ``API``
(``state.py``); the aggregator's app.py opens its resources in its one ordered list.
docs/aggregator-api.md describes every route. Nothing is imported here, so that
``services/aggregator/settings.py`` can import ``api.settings`` without the routes.
"""
