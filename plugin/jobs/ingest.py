"""A FiftyOne dataset from the command line's results, in the schema the jobs write.

``anonymize --dataset NAME`` loads the originals with their boxes, copies and errors through the
same field, label and copy modules as ``detect_faces_and_plates`` and ``anonymize_images``, so those jobs, the
audit and share take it from there as if they had made it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.images import DEFAULT_JPEG_QUALITY
from ..engine import DETECT, Result
from . import copies, database, fields, labels

PRODUCED_BY = "fiftyone-anonymizer command line"


def dataset_from_results(
    name: str,
    results: Sequence[Result],
    config: Any,
    detector: Any,
    settings: Any,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
):
    """A persistent dataset of the originals, with the boxes, the copies' paths (the App's
    media in grid and modal) and fingerprints, and for failed images the reason.

    Args:
        name: the dataset's name
        results: the engine's results of a detect-and-anonymize run over files
        config: the ``DetectorConfig`` the detector was built from
        detector: the detector that ran
        settings: the ``BlurSettings`` the copies were made with
        jpeg_quality: the copies' JPEG quality
        output_dir: the folder the copies went to
        overwrite: replace an existing dataset of that name instead of refusing

    Returns:
        the ``fo.Dataset``
    """
    import fiftyone as fo

    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"a FiftyOne dataset named '{name}' already exists")
        fo.delete_dataset(name)
    label_field, output_field = fields.DEFAULT_LABEL_FIELD, fields.DEFAULT_OUTPUT_FIELD
    error_field = fields.DEFAULT_ERROR_FIELD
    recipe = copies.AnonymizeRecipe(
        label_fields=(label_field,),
        settings=settings,
        jpeg_quality=jpeg_quality,
        output_dir=str(Path(output_dir).absolute()) if output_dir is not None else None,
    )

    dataset = fo.Dataset(name, persistent=True)
    fields.declare_detections_field(dataset, label_field)
    copies.declare_copy_fields(dataset, output_field)
    errors = fields.error_values(dataset, error_field)
    ids = dataset.add_samples(
        [fo.Sample(filepath=str(_absolute(r.item.source, "source"))) for r in results],
        progress=False,
    )
    fp_field = copies.fingerprint_field(output_field)
    copies.record_copies(dataset, output_field, PRODUCED_BY, recipe)
    with database.SampleWriter(dataset) as writer:
        for sid, r in zip(ids, results, strict=True):
            if r.ok:
                writer.write(
                    sid,
                    {
                        label_field: labels.to_fo_detections(r.detections),
                        output_field: str(_absolute(r.item.target, "target")),
                        fp_field: recipe.fingerprint(
                            r.detections, _absolute(r.item.target, "target")
                        ),
                        **errors(None),
                    },
                )
            else:
                job = "detect" if r.stage == DETECT else "anonymize"
                writer.write(sid, errors(f"{job}: {r.error}"))
    fields.record_detections(dataset, label_field, PRODUCED_BY, config, detector)
    fields.show_copies(dataset, output_field)  # the App opens on the copies, not the originals
    return dataset


def _absolute(path: str | os.PathLike | None, what: str) -> Path:
    """``path`` made absolute; the results of a run over files all have a source and a target."""
    if path is None:
        raise ValueError(f"a result without a {what} file: expected a run over files")
    return Path(path).absolute()
