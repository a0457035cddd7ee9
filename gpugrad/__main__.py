"""``python -m gpugrad train ...`` is the same as the ``gpugrad`` console script."""

from .cli import main

raise SystemExit(main())
