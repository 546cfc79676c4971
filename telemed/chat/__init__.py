"""Consultation chat: persistence, per-consultation ordering, read state, idempotent sends."""
