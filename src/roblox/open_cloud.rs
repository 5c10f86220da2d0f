//! Roblox Open Cloud: MessagingService publish, user restrictions, Secrets.
