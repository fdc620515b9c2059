"""MoEngage campaign event codes and their channels, and the campaign attributes Streams never exports.

The channel decides which recipient field an event carries: ``push_id`` for push, ``email_id`` for e-mail,
``mobile_number`` for SMS, and none for every other event.
"""

from __future__ import annotations

from typing import Literal

Channel = Literal["push", "email", "sms", "other"]

EMAIL_CODES = frozenset(
    {
        "MOE_EMAIL_SENT",
        "MOE_EMAIL_DEFERRED",
        "MOE_EMAIL_DELIVERED",
        "MOE_EMAIL_DROP",
        "MOE_EMAIL_HARD_BOUNCE",
        "MOE_EMAIL_SOFT_BOUNCE",
        "MOE_EMAIL_OPEN",
        "MOE_EMAIL_CLICK",
        "MOE_EMAIL_UNSUBSCRIBE",
        "MOE_EMAIL_SPAM",
    }
)
SMS_CODES = frozenset({"SMS_SENT", "SMS_DELIVERED"})
PUSH_CODES = frozenset(
    {
        "NOTIFICATION_RECEIVED_MOE",
        "NOTIFICATION_CLICKED_MOE",
        "NOTIFICATION_CLEARED_MOE",
        "n_i_s",
        "NOTIFICATION_CLICKED_IOS_MOE",
        "NOTIFICATION_RECEIVED_WEB_MOE",
        "NOTIFICATION_CLICKED_WEB_MOE",
    }
)
OTHER_CAMPAIGN_CODES = frozenset(
    {
        "MOE_CONNECTOR_SENT",
        "MOE_CARD_SENT",
        "MOE_CARD_DELIVERED",
        "MOE_CARD_VIEWED",
        "MOE_CARD_CLICKED",
        "MOE_IN_APP_SHOWN",
        "MOE_IN_APP_CLICKED",
        "MOE_IN_APP_DISMISSED",
        "MOE_ONSITE_MESSAGE_SHOWN",
        "MOE_ONSITE_MESSAGE_CLICKED",
        "MOE_ONSITE_MESSAGE_DISMISSED",
        "USER_ENTERED_FLOW",
        "USER_EXITED_FLOW",
        "MOE_CAMPAIGN_CONTROL_GROUP",
    }
)
CAMPAIGN_CODES = EMAIL_CODES | SMS_CODES | PUSH_CODES | OTHER_CAMPAIGN_CODES

# MoEngage Streams does not export these campaign event attributes (its documentation says they are "not
# supported for export in streams currently"), so they are removed from campaign events.
UNSUPPORTED_CAMPAIGN_ATTRIBUTES = (
    "email_subject",
    "email_click_url",
    "inapp_widget_clicked",
    "onsite_message_url_clicked",
)

RECIPIENT_FIELD: dict[Channel, str | None] = {
    "push": "push_id",
    "email": "email_id",
    "sms": "mobile_number",
    "other": None,
}


def channel_of(event_code: str) -> Channel | None:
    """The channel of a known campaign event code; None for codes MoEngage does not list."""
    if event_code in PUSH_CODES:
        return "push"
    if event_code in EMAIL_CODES:
        return "email"
    if event_code in SMS_CODES:
        return "sms"
    if event_code in OTHER_CAMPAIGN_CODES:
        return "other"
    return None
