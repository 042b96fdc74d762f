"""fieldlog screens: log browser (home), sighting form and detail, report generation and viewer, sync.

Modules import each other lazily (inside actions) so that importing one screen
does not pull in the rest, and the pure ``form_model`` stays Textual-free.
"""
