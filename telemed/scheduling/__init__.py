"""Centres, doctors, duty slots, consultations and their state machine."""
