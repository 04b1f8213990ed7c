"""Celery workers that answer jobs; `celery -A workers worker` finds the app here."""

from workers.celeryapp import app

__all__ = ["app"]
