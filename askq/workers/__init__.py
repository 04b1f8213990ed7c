"""Celery workers that answer jobs; `celery -A askq.workers worker` finds the app here."""

from askq.workers.celeryapp import app

__all__ = ["app"]
