"""Persistence of the attestation service (oslo.db, SQLAlchemy, alembic).

Services use :mod:`trusted_pools.db.api` only; models and migrations are
internal to this package.
"""
