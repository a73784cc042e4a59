"""Transactional outbox, relay to JetStream, inbox-deduplicating consumers and dead letters."""
