"""Telling people: the notifier port and its outbox (the embedded default), e-mail and webhook channels, escalation.
May import registry, observability and the shared modules at the top of evolution/.

* :mod:`~evolution.notifications.outbox`: the :class:`Notifier` port and ``OutboxNotifier``, a row in
  ``notifications`` plus the log.
* :mod:`~evolution.notifications.smtp`: plain-text e-mail over SMTP (STARTTLS or implicit TLS, optional login).
* :mod:`~evolution.notifications.webhook`: JSON POST signed with HMAC-SHA256 over timestamp and body; receivers check
  it with ``verify_webhook_signature``.
* :mod:`~evolution.notifications.fanout`: the outbox first, then the channels an escalation policy routes to; it
  escalates requests nobody acted on (``FanOutNotifier.run_escalations``).
* :mod:`~evolution.notifications.lineage`: delivers the OpenLineage events waiting in the outbox through the
  OpenLineage client's file or HTTP transport (``LineageDelivery``; configured by ``lineage_config``).
"""
