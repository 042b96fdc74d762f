"""The farm office: a server-rendered web page over the synced data, for office users (see web.py)."""
