"""Draft sources behind one interface (see base.py). ``make_drafter`` builds one by name."""

from .base import Draft, Drafter, SamplingSpec

__all__ = ["Draft", "Drafter", "SamplingSpec"]
