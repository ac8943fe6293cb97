"""foveal.zoo: timm models built on foveal.ops, and diffusers hooks."""
from . import van  # noqa: F401,E402
from . import biformer  # noqa: F401
from . import bevanet  # noqa: F401
from . import vig  # noqa: F401
