"""Queued exports whose message was lost are sent again, as queued jobs are
(tunesmith/reaper.py `redispatch_queued`).

A broker restarted without persistence, or a message dropped on the way, leaves an export
`queued` with nothing in the broker that would ever start it. One that simply waits its turn
keeps its one message: the broker is read first, and an export whose message still waits
there (or was just delivered to a worker that is about to claim it) is left alone. A
duplicate would be harmless (claim_export is atomic), but a long queue would pile them up.
"""

import logging
import re
import time

import sqlalchemy as sa

from tunesmith.db.models import Export
from tunesmith.db.session import session_scope
from tunesmith.jobs.exports import ExportStatus, send_export
from tunesmith.queue import jobs_waiting_in
from tunesmith.settings import settings

log = logging.getLogger(__name__)
EXPORT_ID = re.compile(r"ftexp-[0-9a-f]{24}")
# How long a message may take to go from its queue to kombu's unacknowledged set.
SETTLE_SECONDS = 0.25


def _waiting_in_broker() -> set[str]:
    try:
        return jobs_waiting_in({settings.queue}, ids=EXPORT_ID,
                               delivered_within=settings.redispatch_after_seconds) or set()
    except Exception:  # unreadable now: send again, a duplicate costs one dropped claim
        log.warning("could not read the broker's queue; stale exports are sent again",
                    exc_info=True)
        return set()


def redispatch_queued_exports(now: float | None = None) -> list[str]:
    """Send again the queued exports sent (or created) longer than
    `redispatch_after_seconds` ago, unclaimed, whose message the broker no longer holds."""
    now = time.time() if now is None else now
    cutoff = now - settings.redispatch_after_seconds
    sent: list[str] = []
    with session_scope() as session:
        stale = session.scalars(sa.select(Export).where(
            Export.status == ExportStatus.queued.value,
            sa.func.coalesce(Export.dispatched_at, Export.created_at) < cutoff)).all()
        if not stale:
            return sent
        waiting = _waiting_in_broker()
        if any(export.id not in waiting for export in stale):
            # A message a worker is taking right now is in neither place for a moment.
            time.sleep(SETTLE_SECONDS)
            waiting |= _waiting_in_broker()
            for export in stale:
                session.refresh(export)
        for export in stale:
            if export.status != ExportStatus.queued:
                continue
            if export.id in waiting:  # still in line: look again one period from now
                export.dispatched_at = now
                continue
            try:
                export.dispatched_at = send_export(export.id)
            except Exception:
                log.warning("broker unreachable; export %s stays queued for the next round",
                            export.id)
                break
            sent.append(export.id)
    return sent
