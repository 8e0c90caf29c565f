"""Alembic migrations; shipped as a package so an installed `tunesmith migrate` finds them."""
