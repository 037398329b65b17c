import sys

from kzoo.cli.main import main

sys.exit(main())
