"""Producer-side adapters for tests, built the way services build them."""

from __future__ import annotations

from taskserve import TaskProcessorAdapter, TaskProcessorConfig, instantiate_adapter_from_config


class ProducerFactory:
    """Builds producer adapters with ``instantiate_adapter_from_config`` and
    shuts every one down when the test ends."""

    def __init__(self) -> None:
        self.made: list[TaskProcessorAdapter] = []

    def __call__(self, config: TaskProcessorConfig) -> TaskProcessorAdapter:
        """An initialized adapter for ``config``."""
        adapter = instantiate_adapter_from_config(config)
        self.made.append(adapter)
        return adapter

    def shutdown_all(self) -> None:
        """Shut down every adapter made."""
        for adapter in self.made:
            adapter.shutdown()
