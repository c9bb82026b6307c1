"""The SQL task store and the dialect hooks another SQL engine implements."""
