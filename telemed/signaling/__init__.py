"""The Socket.IO server: connection auth, rooms, event validation, live events, and
routing across nodes through Redis."""
