import sys

from dockyard.cli import main

sys.exit(main())
