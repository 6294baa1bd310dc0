"""The run store: the only code that opens, creates, trims and checks a run's Zarr group.

Layout (docs/store-layout.md, ``layout_version`` 2): root attrs, ``scalars/``, ``weights/``,
``state/``, ``activations/``, ``spectra/``, ``probe/``; every group's ``step`` index is
written last at each flush, so its valid prefix marks the complete rows.

- opening: :func:`open_store` (a new, replaced or resumed run, for writing),
  :func:`open_root` / :func:`existing_root` (a run as stored), :func:`stored_attr`,
  :func:`update_attrs`; refusals :class:`RunExistsError`, :class:`RunNotFoundError`;
- one writer per store: :func:`acquire_lock`, :func:`add_pid`, :func:`release_lock`
  (:class:`RunLockedError`);
- root attrs: :func:`root_attrs`, :func:`check_resumable`, :func:`check_json`;
- the probe: :func:`write_probe`, :func:`read_probe`, :func:`stored_probe`;
- resume: :func:`last_complete` (defined once: the Recorder and the CLI use it),
  :func:`trim_for_resume`, :func:`valid_prefix`;
- finishing: :func:`consolidate`, :func:`stored_bytes`.
"""

from ._attrs import check_json, check_resumable, root_attrs, utcnow
from ._lock import RunLockedError, acquire_lock, add_pid, release_lock
from ._open import (
    LAYOUT_VERSION,
    NOT_FOUND,
    RunExistsError,
    RunNotFoundError,
    check_layout,
    check_location,
    consolidate,
    existing_root,
    open_root,
    open_store,
    stored_attr,
    stored_bytes,
    update_attrs,
)
from ._probe import read_probe, stored_probe, write_probe
from ._resume import last_complete, trim_for_resume, valid_prefix

__all__ = [
    "LAYOUT_VERSION",
    "NOT_FOUND",
    "RunExistsError",
    "RunLockedError",
    "RunNotFoundError",
    "acquire_lock",
    "add_pid",
    "check_json",
    "check_layout",
    "check_location",
    "check_resumable",
    "consolidate",
    "existing_root",
    "last_complete",
    "open_root",
    "open_store",
    "read_probe",
    "release_lock",
    "root_attrs",
    "stored_attr",
    "stored_bytes",
    "stored_probe",
    "trim_for_resume",
    "update_attrs",
    "utcnow",
    "valid_prefix",
    "write_probe",
]
