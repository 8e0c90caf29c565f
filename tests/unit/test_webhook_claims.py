"""The webhook sender's claims, on the real tables in an in-memory SQLite database: a row is
claimed just before it is sent and for one send's time, so a sender that dies mid-send
strands that one row, briefly, and no other."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import Base
from tunesmith.db.models import Project, WebhookDelivery, WebhookEndpoint
from tunesmith.settings import settings
from tunesmith.webhooks import sender


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    Base.metadata.create_all(engine)

    @contextmanager
    def scope() -> Iterator[Session]:
        with Session(engine, expire_on_commit=False) as session:
            yield session
            session.commit()

    monkeypatch.setattr(sender, "session_scope", scope)
    # Loopback is refused: every attempt fails at once and is logged, no network needed.
    monkeypatch.setattr(settings, "webhook_allow_private_urls", False)
    with Session(engine) as session:
        session.add(Project(id="proj-1", name="p"))
        session.add(WebhookEndpoint(id="we-1", project_id="proj-1", url="http://127.0.0.1:9/",
                                    events=["fine_tuning.job.succeeded"], secret="whsec_x"))
        for n in range(3):
            session.add(WebhookDelivery(
                id=f"whdel-{n}", endpoint_id="we-1", event_id=f"evt_{n}",
                event_type="fine_tuning.job.succeeded", payload="{}", status="pending",
                attempts=0, next_attempt_at=time.time() - 10 + n))
        session.commit()
    yield engine
    engine.dispose()


def attempts(engine: sa.Engine) -> dict[str, int]:
    with Session(engine) as session:
        return dict(session.execute(sa.select(WebhookDelivery.id, WebhookDelivery.attempts)).all())


def test_a_dead_senders_claim_holds_one_row_for_one_send(engine: sa.Engine) -> None:
    before = time.time()
    stranded = sender._claim_next()  # a sender that claimed the oldest row and died
    assert stranded == "whdel-0"
    with Session(engine) as session:
        claim = session.get(WebhookDelivery, stranded)
        assert claim is not None and claim.claimed_until is not None
        # Held for one send (timeout + bookkeeping), not for a batch of twenty sends.
        assert claim.claimed_until <= before + settings.webhook_timeout_seconds + 16

    # Another sender sends the other two rows and leaves the claimed one alone.
    assert sender.run_once() == 2
    assert attempts(engine) == {"whdel-0": 0, "whdel-1": 1, "whdel-2": 1}

    # Once the claim runs out the row is sent again, at least once.
    with Session(engine) as session:
        session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == stranded)
                        .values(claimed_until=time.time() - 1))
        session.commit()
    assert sender.run_once() == 1
    assert attempts(engine)["whdel-0"] == 1


def test_run_once_stops_at_its_limit_and_frees_each_claim(engine: sa.Engine) -> None:
    assert sender.run_once(limit=2) == 2
    with Session(engine) as session:
        rows = session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert [row.attempts for row in rows] == [1, 1, 0]
        assert all(row.claimed_until is None for row in rows)
        assert all("URL refused" in (row.last_error or "") for row in rows[:2])
