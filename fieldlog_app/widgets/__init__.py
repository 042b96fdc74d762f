"""Reusable fieldlog widgets: form fields and observation rows, provenance-coloured report text,
and the live generation status line."""
