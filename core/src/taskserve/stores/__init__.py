"""Task state stores shared by adapters whose engine has no suitable one.

:mod:`taskserve.stores.redis_store` keeps task records, cancel requests,
leases and dead letters in Redis with forward-only status; the Celery,
Dramatiq and RQ plugins use it, whatever broker carries their messages.
"""
