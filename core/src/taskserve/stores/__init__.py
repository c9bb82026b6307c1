"""Deprecated: the task stores moved; import them from :mod:`taskserve.kit`."""
