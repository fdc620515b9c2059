"""Event classification as MoEngage does it: campaign interaction events by code, everything else a user
action."""

from __future__ import annotations

# event code -> (display name, channel): MoEngage's campaign interaction events.
CAMPAIGN_EVENTS: dict[str, tuple[str, str]] = {
    "MOE_EMAIL_SENT": ("Email Sent", "Email"),
    "MOE_EMAIL_DEFERRED": ("Email Deferred", "Email"),
    "MOE_EMAIL_DELIVERED": ("Email Delivered", "Email"),
    "MOE_EMAIL_DROP": ("Email Dropped", "Email"),
    "MOE_EMAIL_HARD_BOUNCE": ("Email Bounced", "Email"),
    "MOE_EMAIL_SOFT_BOUNCE": ("Email Soft Bounced", "Email"),
    "MOE_EMAIL_OPEN": ("Email Opened", "Email"),
    "MOE_EMAIL_CLICK": ("Email Clicked", "Email"),
    "MOE_EMAIL_UNSUBSCRIBE": ("Email Unsubscribed", "Email"),
    "MOE_EMAIL_SPAM": ("Email Spam Complained", "Email"),
    "SMS_SENT": ("SMS Sent", "SMS"),
    "SMS_DELIVERED": ("SMS Delivered", "SMS"),
    "NOTIFICATION_RECEIVED_MOE": ("Notification Received Android", "Push"),
    "NOTIFICATION_CLICKED_MOE": ("Notification Clicked Android", "Push"),
    "NOTIFICATION_CLEARED_MOE": ("Notification Swiped Android", "Push"),
    "n_i_s": ("Notification Sent iOS", "Push"),
    "NOTIFICATION_CLICKED_IOS_MOE": ("Notification Clicked iOS", "Push"),
    "NOTIFICATION_RECEIVED_WEB_MOE": ("Notification Received Web", "Push"),
    "NOTIFICATION_CLICKED_WEB_MOE": ("Notification Clicked Web", "Push"),
    "MOE_CONNECTOR_SENT": ("Connector Sent", "Connector"),
    "MOE_CARD_SENT": ("Card Sent", "Cards"),
    "MOE_CARD_DELIVERED": ("Card Delivered", "Cards"),
    "MOE_CARD_VIEWED": ("Card Viewed", "Cards"),
    "MOE_CARD_CLICKED": ("Card Clicked", "Cards"),
    "MOE_IN_APP_SHOWN": ("Mobile In-App Shown", "Mobile In-Apps"),
    "MOE_IN_APP_CLICKED": ("Mobile In-App Clicked", "Mobile In-Apps"),
    "MOE_IN_APP_DISMISSED": ("Mobile In-App Closed", "Mobile In-Apps"),
    "MOE_ONSITE_MESSAGE_SHOWN": ("On-site Message Shown", "On-site Messaging"),
    "MOE_ONSITE_MESSAGE_CLICKED": ("On-site Message Clicked", "On-site Messaging"),
    "MOE_ONSITE_MESSAGE_DISMISSED": ("On-site Message Closed", "On-site Messaging"),
    "USER_ENTERED_FLOW": ("User Entered Flow", "Flows"),
    "USER_EXITED_FLOW": ("User Exited Flow", "Flows"),
    "MOE_CAMPAIGN_CONTROL_GROUP": ("User Added to Control Group", "All channels"),
}
CAMPAIGN_EVENT = "CAMPAIGN_EVENT"
USER_ACTION_EVENT = "USER_ACTION_EVENT"
# MoEngage Streams exports campaign_* attributes but not these.
UNSUPPORTED_CAMPAIGN_ATTRIBUTES = frozenset(
    {"email_subject", "email_click_url", "inapp_widget_clicked", "onsite_message_url_clicked"}
)
