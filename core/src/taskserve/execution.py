"""Deprecated: import TaskRunner, DeliveryRecorder and Outcome from :mod:`taskserve.kit`."""

from taskserve._deprecated import moved
from taskserve.engine.runner import DeliveryRecorder, Handler, Outcome, TaskRunner

moved("taskserve.execution", "TaskRunner, DeliveryRecorder, Outcome and Handler")

__all__ = ["DeliveryRecorder", "Handler", "Outcome", "TaskRunner"]
