"""``python -m node`` runs the ``qoq-node`` command."""

import sys

from node.cli import main

sys.exit(main())
