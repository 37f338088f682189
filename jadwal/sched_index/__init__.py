"""The scheduling index: realize any data schedule exactly, with sequential shard reads, bounded
memory, exact resume and distributed balance.  Public API: :func:`open_index`, :func:`build_index`,
:func:`continue_index` (re-plan or :func:`amend` a running schedule from a step), :func:`check_index`,
the policy registry :func:`register`."""
from .amend import amend, continue_index
from .check import check_index
from .planner import PlanError, build_index
from .policies import POLICIES, register
from .reader import open_index
from .spec import SpecError, load_spec

__all__ = ["open_index", "build_index", "amend", "continue_index", "check_index", "register", "POLICIES", "PlanError", "SpecError", "load_spec"]
