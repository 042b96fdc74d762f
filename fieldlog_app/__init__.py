"""fieldlog: vineyard scouting on an offline handheld.

Log pest sightings, generate scouting reports with edgespec, keep everything in
a local SQLite store and sync it to the farm office later. This package must
import fast and without Textual, so the command line stays snappy; the UI lives
in ``fieldlog_app.app`` and is imported only when the app starts.
"""

__version__ = "0.1.0"
