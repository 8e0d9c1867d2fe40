"""``python -m cmdm_pipeline.cli``: the ``cmdm`` command."""

import sys

from cmdm_pipeline.cli import main

sys.exit(main())
