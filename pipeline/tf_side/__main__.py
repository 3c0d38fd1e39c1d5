"""`python -m pipeline.tf_side JOB.json RESULT.json`: see `pipeline.tf_side.worker`."""

import sys

from pipeline.tf_side.worker import main

sys.exit(main())
