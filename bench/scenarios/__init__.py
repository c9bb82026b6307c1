"""The scenarios measured besides throughput: crash-to-redelivery, ``serve.run``
to first SUCCESS, and autoscaling under taskserve's and Ray's policies."""
