"""Marketplace models, one module per concern."""

from marketplace.models.chain import ChainTransaction  # noqa: F401
from marketplace.models.channels import (  # noqa: F401
    LIVE_CHANNEL_STATES,
    PaymentChannel,
    PaymentChannelState,
)
from marketplace.models.jobs import (  # noqa: F401
    TERMINAL_STATES,
    TRANSITIONS,
    AttemptState,
    Job,
    JobAttempt,
    JobState,
)
from marketplace.models.ops import (  # noqa: F401
    DeadLetter,
    DeliveryState,
    HealthProbe,
    HostProbe,
    WebhookAttempt,
    WebhookDelivery,
)
from marketplace.models.trust import VerificationRecord, VerificationState  # noqa: F401
from marketplace.models.usage import (  # noqa: F401
    JobProcessing,
    ProcessingState,
    UsageStats,
    WebhookEndpoint,
)
