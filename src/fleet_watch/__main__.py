import sys

from fleet_watch.cli import main

sys.exit(main())
