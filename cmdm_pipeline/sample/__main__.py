"""``python -m cmdm_pipeline.sample``: write the bundled sample sources."""

import sys

from cmdm_pipeline.sample.generator import main

sys.exit(main())
