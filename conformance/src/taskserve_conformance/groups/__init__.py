"""The test groups of the conformance suite, one promise area per module.

Each group is a mixin class whose name does not start with ``Test``, so
pytest never collects it alone; :class:`taskserve_conformance.AdapterConformance`
combines them all. Each module's docstring states the promise it checks and
the SPEC section it comes from.
"""
