"""``python -m fieldlog_app.sync ...`` is ``fieldlog sync ...``."""

import sys

from fieldlog_app.cli import main

sys.exit(main(["sync", *sys.argv[1:]]))
