"""A local, faithful stand-in for the Google endpoints agfast talks to (OAuth, userinfo, Cloud Code v1internal).

Every agfast test and benchmark sees "Google" through this package, so it answers like Google and rejects
malformed requests the way Google does.
"""

from .accounts import DEFAULT_MODELS, MODEL_CATALOG, ModelSpec, SimAccount, demo_accounts
from .faults import Fault
from .records import RecordedRequest
from .runner import SimulatorThread, run_forever
from .server import GoogleSimulator
from .signatures import SKIP_SIGNATURE

__all__ = [
    "DEFAULT_MODELS",
    "MODEL_CATALOG",
    "SKIP_SIGNATURE",
    "Fault",
    "GoogleSimulator",
    "ModelSpec",
    "RecordedRequest",
    "SimAccount",
    "SimulatorThread",
    "demo_accounts",
    "run_forever",
]
