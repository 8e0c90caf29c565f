"""Database models and sessions, shared by the API and the workers."""
