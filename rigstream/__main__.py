import sys

from rigstream.cli import main

sys.exit(main())
