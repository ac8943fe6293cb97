"""Benchmark suites; importing this package registers every suite with the runner."""
from . import models, na, na1d  # noqa: F401
from . import bra  # noqa: F401
from . import lka  # noqa: F401
from . import gla  # noqa: F401
from . import diffusion  # noqa: F401
from . import radial  # noqa: F401
