"""`/v1/webhooks`: a project's webhook endpoints and the delivery log of each."""

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from api.deps import CurrentProject, SessionDep
from api.errors import InvalidRequest, NotFound, error_responses
from api.json_body import json_object
from api.routes.jobs import raw_body
from api.schemas.webhooks import (
    WebhookDeliveryList,
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointList,
    WebhookEndpointObject,
)
from api.serializers import list_object
from tunesmith.db.models import Project, WebhookDelivery, WebhookEndpoint
from tunesmith.ids import new_id
from tunesmith.webhooks.outbox import EVENT_TYPES
from tunesmith.webhooks.signing_secrets import new_secret, seal
from tunesmith.webhooks.urls import RefusedURL, check_url

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

FIELDS = {"url", "events", "description"}
MAX_URL = 2048
MAX_DESCRIPTION = 512
MAX_ENDPOINTS_PER_PROJECT = 20
# The body is read raw (through the one JSON reader of user input), so FastAPI cannot see
# its model: documented here.
CREATE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["url"], "additionalProperties": False, "properties": {
        "url": {"type": "string", "maxLength": MAX_URL, "pattern": "^https?://[^/?#]+",
                "description": "http:// or https:// URL that receives the events"},
        "events": {"type": "array", "minItems": 1,
                   "items": {"type": "string", "enum": list(EVENT_TYPES)},
                   "description": "Events to send (default: all)"},
        "description": {"type": ["string", "null"], "maxLength": MAX_DESCRIPTION}}}}}}}


def endpoint_object(endpoint: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": endpoint.id, "object": "webhook_endpoint", "url": endpoint.url,
                            "events": list(endpoint.events), "description": endpoint.description,
                            "created_at": endpoint.created_at}
    if secret is not None:  # in the create answer only: it is never shown again
        body["secret"] = secret
    return body


def delivery_object(delivery: WebhookDelivery) -> dict[str, Any]:
    return {"id": delivery.id, "object": "webhook_delivery", "event_id": delivery.event_id,
            "event": delivery.event_type, "status": delivery.status,
            "attempts": delivery.attempts, "last_status_code": delivery.last_status_code,
            "last_error": delivery.last_error,
            "next_attempt_at": (None if delivery.status != "pending"
                                or delivery.next_attempt_at is None
                                else int(delivery.next_attempt_at)),
            "created_at": delivery.created_at, "delivered_at": delivery.delivered_at}


def _get_endpoint(session: Session, project: Project, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.project_id != project.id:
        raise NotFound(f"No webhook endpoint '{endpoint_id}'.", param="webhook_id")
    return endpoint


def _parse(raw: bytes) -> tuple[str, list[str], str | None]:
    """(url, events, description) from the body, or a 400 naming the field at fault."""
    body = json_object(raw, needs="'url'")
    for name in body:
        if name not in FIELDS:
            raise InvalidRequest(f"{name}: unknown field; a webhook endpoint takes "
                                 f"{', '.join(sorted(FIELDS))}.", param=name)
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest("url: required, a string.", param="url")
    if len(url) > MAX_URL:
        raise InvalidRequest(f"url: longer than {MAX_URL} characters.", param="url")
    try:
        check_url(url)
    except RefusedURL as exc:
        raise InvalidRequest(f"url: {exc}.", param="url", code="invalid_url") from exc
    events = body.get("events", list(EVENT_TYPES))
    if (not isinstance(events, list) or not events
            or not all(isinstance(e, str) for e in events)):
        raise InvalidRequest("events: a non-empty list of event names.", param="events")
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(f"events: unknown event '{unknown[0]}'; known: "
                             f"{', '.join(EVENT_TYPES)}.", param="events")
    description = body.get("description")
    if description is not None and (not isinstance(description, str)
                                    or len(description) > MAX_DESCRIPTION):
        raise InvalidRequest(f"description: a string of at most {MAX_DESCRIPTION} characters.",
                             param="description")
    return url, list(dict.fromkeys(events)), description


@router.post("", response_model=WebhookEndpointCreated, responses=error_responses(400, 413),
             openapi_extra=CREATE_BODY)
def create_webhook(raw: Annotated[bytes, Depends(raw_body)], session: SessionDep,
                   project: CurrentProject) -> dict[str, Any]:
    """Add an endpoint. The answer holds its signing secret (`whsec_...`), shown this once."""
    url, events, description = _parse(raw)
    count = session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)
                           .where(WebhookEndpoint.project_id == project.id)) or 0
    if count >= MAX_ENDPOINTS_PER_PROJECT:
        raise InvalidRequest(f"A project has at most {MAX_ENDPOINTS_PER_PROJECT} webhook "
                             "endpoints; delete one first.", code="too_many_webhooks")
    secret = new_secret()
    endpoint = WebhookEndpoint(id=new_id("wh"), project_id=project.id, url=url, events=events,
                               description=description, secret=seal(secret))
    session.add(endpoint)
    session.commit()
    return endpoint_object(endpoint, secret=secret)


@router.get("", response_model=WebhookEndpointList)
def list_webhooks(session: SessionDep, project: CurrentProject) -> dict[str, Any]:
    """The project's endpoints, newest first (without their secrets)."""
    endpoints = session.scalars(sa.select(WebhookEndpoint)
                                .where(WebhookEndpoint.project_id == project.id)
                                .order_by(WebhookEndpoint.id.desc())).all()
    return list_object([endpoint_object(e) for e in endpoints], has_more=False)


@router.get("/{webhook_id}", response_model=WebhookEndpointObject, responses=error_responses(404))
def read_webhook(session: SessionDep, project: CurrentProject, webhook_id: str
                 ) -> dict[str, Any]:
    return endpoint_object(_get_endpoint(session, project, webhook_id))


@router.delete("/{webhook_id}", response_model=WebhookEndpointDeleted,
               responses=error_responses(404))
def delete_webhook(session: SessionDep, project: CurrentProject, webhook_id: str
                   ) -> dict[str, Any]:
    """Remove the endpoint; its pending deliveries and its log go with it."""
    endpoint = _get_endpoint(session, project, webhook_id)
    session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.commit()
    return {"id": webhook_id, "object": "webhook_endpoint.deleted", "deleted": True}


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryList,
            responses=error_responses(404))
def list_deliveries(
    session: SessionDep, project: CurrentProject, webhook_id: str,
    after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """The endpoint's delivery log, newest first: event, attempts, last status code, next
    attempt, delivered at."""
    endpoint = _get_endpoint(session, project, webhook_id)
    query = sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if after:
        query = query.where(WebhookDelivery.id < after)
    found = session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)).all()
    return list_object([delivery_object(d) for d in found[:limit]], has_more=len(found) > limit)
