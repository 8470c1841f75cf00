"""The pipelines, the local runner and the ``aicd`` CLI.

kfp's package init imports its API client (the kubernetes client and requests: about half a
second of every ``aicd`` command) unless ``_KFP_RUNTIME`` is set, the switch kfp's own step
containers use. Building, compiling and running pipelines locally never need that client, so
kfp is first imported here with the switch on and the environment restored at once (kfp.dsl,
imported after, still loads its compile-time parts); ``aicd submit`` imports ``kfp.client`` itself.
"""

import os as _os
import sys as _sys

if "kfp" not in _sys.modules:
    _previous = _os.environ.get("_KFP_RUNTIME")
    _os.environ["_KFP_RUNTIME"] = "true"
    try:
        import kfp as _kfp  # noqa: F401 - imported here for the switch above
    finally:
        if _previous is None:
            del _os.environ["_KFP_RUNTIME"]
        else:
            _os.environ["_KFP_RUNTIME"] = _previous
