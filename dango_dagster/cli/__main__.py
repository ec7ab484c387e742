import sys

from dango_dagster.cli import main

sys.exit(main())
