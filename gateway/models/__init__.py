"""The gateway's models: a record per /v1 request, and batches with their items. Their
tables keep the names they had under the marketplace app (db_table)."""

from gateway.models.batches import (  # noqa: F401
    ITEM_FINISHED,
    Batch,
    BatchItem,
    BatchState,
    ItemState,
)
from gateway.models.requests import GatewayRequest, RequestStatus  # noqa: F401
