"""Monitors: violation windows evaluated from the rollups, and alerts on their state changes.

``service.running(settings, pool)`` is their lifetime, opened by the aggregator's app.py after
the database; the settings section is ``settings.MonitorsSection``. See docs/aggregator-api.md.
Nothing is imported here, so ``services/aggregator/settings.py`` can import the section alone.
"""
