"""Optional integrations, one module per library: install the matching extra to use one.

Every integration speaks the same words (docs/integrations.md has them side by side):
``timeout`` is its handler's timeout, ``ttl`` a lock's or lease's time to live,
``phase`` the phase it runs in, ``name`` its name in logs and the report, ``pending``
what a failed flush left unwritten; its errors derive from `IntegrationError`.
"""

from ._errors import FlushError as FlushError
from ._errors import IntegrationError as IntegrationError
from ._errors import ReleaseError as ReleaseError

__all__ = ["FlushError", "IntegrationError", "ReleaseError"]
