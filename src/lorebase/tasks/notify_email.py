"""``notify_email``: email a pipeline's end over SMTP (``services/notifications.py``).
Connection trouble and SMTP 4xx replies retry with backoff, up to ``notify.max_attempts``."""

from __future__ import annotations

from lorebase.jobs.registry import TaskSpec
from lorebase.jobs.retry import RetryPolicy
from lorebase.tasks.notify_webhook import PRIORITY

NAME = "notify_email"

SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.services.notifications:SendEmail",
    kind="process",
    priority=PRIORITY,
    retry=RetryPolicy(max_attempts_of=lambda settings: settings.notify.max_attempts),
    summary="email a summary when a pipeline ends",
)
