"""``notify_webhook``: post a pipeline's end, HMAC-signed, to the KB's webhook URL
(``services/notifications.py``; docs/notifications.md). 408/429/5xx and network errors retry
with backoff, up to ``notify.max_attempts``. It carries no ``pipeline_id``: a notice never holds
its pipeline open, and is not paused or cancelled with it."""

from __future__ import annotations

from lorebase.jobs.registry import TaskSpec
from lorebase.jobs.retry import RetryPolicy

NAME = "notify_webhook"
#: above bulk work (crawl 5, uploads 10), below the embedder loop (20): small and time-sensitive
PRIORITY = 15

SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.services.notifications:SendWebhook",
    kind="process",  # short jobs, and every deployment has workers for this queue
    priority=PRIORITY,
    retry=RetryPolicy(max_attempts_of=lambda settings: settings.notify.max_attempts),
    summary="post a signed webhook when a pipeline ends",
)
