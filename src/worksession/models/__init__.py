"""ORM models, one module per table. Importing this package registers every table."""

from worksession.models.base import Base
from worksession.models.chat_message import ChatMessage
from worksession.models.provider_active_status import ProviderActiveStatus
from worksession.models.seeker_search_preference import SeekerSearchPreference
from worksession.models.session_event import SessionEvent
from worksession.models.webhook_delivery import WebhookDelivery
from worksession.models.work_offer import WorkOffer
from worksession.models.work_order import WorkOrder
from worksession.models.work_session import WorkSession

__all__ = [
    "Base",
    "ChatMessage",
    "ProviderActiveStatus",
    "SeekerSearchPreference",
    "SessionEvent",
    "WebhookDelivery",
    "WorkOffer",
    "WorkOrder",
    "WorkSession",
]
