"""The sender: delivers due outbox rows, signed, and retries failures with backoff.

It runs as a thread in every API process (beside the reaper), so it runs wherever the API
does, the embedded default included. Several API replicas may run it: a row is claimed with
a conditional UPDATE (`claimed_until`) before it is sent, so two senders never send one row
at once; a sender that dies mid-send leaves a claim that runs out and the row is sent again
(at least once; the `webhook-id` header lets receivers drop the duplicate).
"""

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa
from standardwebhooks import Webhook

from tunesmith.db.base import now
from tunesmith.db.models import WebhookDelivery, WebhookEndpoint
from tunesmith.db.session import rows_changed, session_scope
from tunesmith.settings import settings
from tunesmith.webhooks.signing_secrets import unseal
from tunesmith.webhooks.urls import RefusedURL, check_url

log = logging.getLogger(__name__)
BATCH = 20
USER_AGENT = "Tunesmith-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(attempts: int) -> float:
    """Exponential backoff with full jitter after `attempts` failures: a receiver that comes
    back is not hit by every sender's retries at one instant."""
    ceiling = min(settings.webhook_retry_max_seconds,
                  settings.webhook_retry_base_seconds * 2 ** (attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


def claim_seconds() -> float:
    """How long a claim holds a row: one send and its bookkeeping. A sender killed mid-send
    keeps the row from the others no longer than this."""
    return settings.webhook_timeout_seconds + 15.0


def _claim_next() -> str | None:
    """Take the next due row for this sender, or None when nothing is due. Rows are claimed
    one at a time, just before each is sent, so a dead sender strands at most one row, and
    for one send's time (a claim taken for a whole batch stranded twenty rows for minutes)."""
    clock = time.time()
    due = (WebhookDelivery.status == "pending") & (WebhookDelivery.next_attempt_at <= clock) & (
        WebhookDelivery.claimed_until.is_(None) | (WebhookDelivery.claimed_until < clock))
    with session_scope() as session:
        # A few candidates, not one: another sender may win the oldest between the two queries.
        candidates = session.scalars(sa.select(WebhookDelivery.id).where(due)
                                     .order_by(WebhookDelivery.next_attempt_at).limit(5)).all()
        for delivery_id in candidates:
            # The same condition again in the UPDATE: of two senders, one changes the row.
            claim = sa.update(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, due).values(
                    claimed_until=clock + claim_seconds())
            if rows_changed(session, claim) == 1:
                return delivery_id
    return None


def _send(url: str, secret: str, event_id: str, payload: str) -> Outcome:
    try:
        check_url(url)
    except RefusedURL as exc:
        return Outcome(None, f"URL refused: {exc}")
    sent_at = datetime.now(tz=UTC)
    signature = Webhook(secret).sign(event_id, sent_at, payload)
    headers = {"content-type": "application/json", "user-agent": USER_AGENT,
               "webhook-id": event_id, "webhook-timestamp": str(int(sent_at.timestamp())),
               "webhook-signature": signature}
    try:
        # No redirects: a redirect could lead to an address the URL check refused.
        response = httpx.post(url, content=payload.encode(), headers=headers,
                              timeout=settings.webhook_timeout_seconds, follow_redirects=False)
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:1000])
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return Outcome(response.status_code, error)


def deliver(delivery_id: str) -> Outcome | None:
    """Send one claimed row and record the attempt in the delivery log."""
    with session_scope() as session:
        row = session.execute(
            sa.select(WebhookDelivery.event_id, WebhookDelivery.payload, WebhookEndpoint.url,
                      WebhookEndpoint.secret)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id)).one_or_none()
    if row is None:  # the endpoint was deleted meanwhile, and its log with it
        return None
    try:
        secret = unseal(row.secret)
    except Exception as exc:  # sealed with a key this API lacks: logged as the attempt's error
        outcome = Outcome(None, f"cannot sign: {exc}"[:1000])
    else:
        outcome = _send(row.url, secret, row.event_id, row.payload)
    with session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return outcome
        delivery.attempts += 1
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error
        delivery.claimed_until = None
        if outcome.delivered:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                "delivered", now(), None)
        elif delivery.attempts >= settings.webhook_max_attempts:
            delivery.status, delivery.next_attempt_at = "failed", None
            log.warning("webhook %s (%s) given up after %d attempts: %s", delivery_id,
                        delivery.event_type, delivery.attempts, outcome.error)
        else:
            delivery.next_attempt_at = time.time() + retry_delay(delivery.attempts)
    return outcome


def run_once(limit: int = BATCH) -> int:
    """Deliver up to `limit` rows that are due now. Returns how many were attempted."""
    attempted = 0
    while attempted < limit and (delivery_id := _claim_next()) is not None:
        deliver(delivery_id)
        attempted += 1
    return attempted


def start_sender_thread(stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(settings.webhook_poll_seconds):
            try:
                # A full batch means more may be due: go on without waiting.
                while run_once() == BATCH and not stop.is_set():
                    pass
            except sa.exc.DBAPIError as exc:  # the rows wait in the database for its return
                log.warning("webhook sender: database unavailable (%s); retrying",
                            type(exc.orig).__name__)
            except Exception:  # a bug must not end the loop
                log.exception("webhook sender round failed; retrying next interval")

    thread = threading.Thread(target=loop, name="tunesmith-webhooks", daemon=True)
    thread.start()
    return thread
