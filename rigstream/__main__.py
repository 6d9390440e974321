import sys

from rigstream.app.cli import main

sys.exit(main())
