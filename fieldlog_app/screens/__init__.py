"""fieldlog screens: log browser (home), sighting form and detail, report generation and viewer, sync.

No screen imports another: each posts a navigation message (``messages.py``)
and the app routes it, so the pure ``form_model`` stays Textual-free and the
screens form no import cycle.
"""
