"""Users, roles, registration, login, sessions and the password policy."""
