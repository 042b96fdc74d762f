"""Sync: the device's outbox → HTTP → the farm-office server (and bundles for no network at all).

* ``protocol`` — the wire format, its validator and the receipt shape (shared by both ends)
* ``client``   — ``sync_once``, ``sync_when_reachable``, ``outbox_status``, ``retry_items``, ``apply_receipts``
* ``server``   — ``create_app`` (Starlette) over ``ServerDB`` (its own SQLite); ``server_cli`` is ``fieldlog-server``
* ``bundle``   — ``export_bundle`` / ``import_bundle``: the outbox on an SD card, through the same idempotent path
* ``cli``      — ``fieldlog sync ...``

Import the submodules you need; this package imports nothing heavy itself so
``fieldlog`` stays fast to start (the server side pulls in Starlette).
"""

PROTOCOL_VERSION = 1
