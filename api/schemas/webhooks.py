"""`/v1/webhooks`: endpoints and their delivery logs."""

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.lists import ListPage


class WebhookEndpointObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"]
    url: str
    events: list[str]
    description: str | None
    created_at: int


class WebhookEndpointCreated(WebhookEndpointObject):
    secret: str = Field(description="The signing secret (`whsec_...`), shown this once.")


class WebhookEndpointList(ListPage[WebhookEndpointObject]):
    pass


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"]
    deleted: bool


class WebhookDeliveryObject(BaseModel):
    id: str
    object: Literal["webhook_delivery"]
    event_id: str
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: int | None = Field(description="While pending: the next try.")
    created_at: int
    delivered_at: int | None


class WebhookDeliveryList(ListPage[WebhookDeliveryObject]):
    pass
