"""``python -m napari_lightmycells.cli`` (what ``torchrun -m`` launches)."""

from . import main

raise SystemExit(main())
