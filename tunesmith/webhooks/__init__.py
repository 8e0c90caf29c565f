"""Webhooks: job events sent to a project's endpoints, signed, at least once, from an outbox."""
