"""The App's front end: one module per operator over the jobs in :mod:`jobs`, the shared form
pieces (:mod:`.forms`), running and streaming a job (:mod:`.run`), and the Anonymization panel.

Each operator builds its form in a module-level ``_<name>_inputs(ctx, inputs)`` helper that
checks every value before Execute (the error shows next to its field), and its ``execute`` is
one library call with the form's values under the job's own names. Run from the App, the job
streams its progress and ends with a readable result and a reload of the dataset; run delegated
or from Python, it returns the job's report as a dict. Each also has a documented ``__call__``
so the same work runs from Python through FiftyOne's operator machinery
(``foo.get_operator(uri)(view, ...)``), immediately or delegated.
"""

from __future__ import annotations

from .anonymize import AnonymizeImages
from .audit import AuditAnonymization
from .detect import DetectFacesAndPlates
from .panel import AnonymizationPanel
from .share import ShareAnonymized
from .status import OpenSamples, ShardedJobStatus

OPERATORS = [
    DetectFacesAndPlates,
    AnonymizeImages,
    ShareAnonymized,
    AuditAnonymization,
    ShardedJobStatus,
    OpenSamples,
]

PANELS = [AnonymizationPanel]
