"""Notifications: in-app, SMS and e-mail through an outbox with retries, and `.ics`."""
