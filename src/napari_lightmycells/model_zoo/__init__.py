"""BioImage Model Zoo (bioimage.io) packages: export our UNETR checkpoints, import ours and BiaPy's.

Needs ``bioimageio.spec`` (export, import) and ``bioimageio.core`` (to test packages); both are
imported lazily so the rest of the package works without them.
"""

from .export import export_bioimageio
from .load import import_bioimageio

__all__ = ["export_bioimageio", "import_bioimageio"]
