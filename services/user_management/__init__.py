"""The user management service: users, roles, credentials, sessions, signing keys and
notification preferences."""
