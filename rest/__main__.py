import sys

from rest_kfp.cli import main

sys.exit(main())
