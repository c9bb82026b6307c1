"""The machinery shared by adapters: running deliveries, stores, consumers.

Internal to the core: adapter authors import all of it from
:mod:`taskserve.kit`, whose names stay stable across releases.
"""
