"""Direct alert destinations (Slack, Microsoft Teams, PagerDuty, a signed webhook, and the
deprecated ``notification.webhook_url``): one module per kind builds the request from a
:class:`~.notice.Notice`; outbox.py queues a transition for each destination of its monitor,
dispatcher.py delivers, retries and logs every attempt (docs/alerting.md)."""
