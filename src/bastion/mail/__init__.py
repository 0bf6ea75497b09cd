"""Mail: a durable outbox written in the caller's transaction, templates, SMTP delivery."""
