"""The Redis task store: task state and the message ledger of engine adapters."""
