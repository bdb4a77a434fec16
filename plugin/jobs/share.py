"""The share job: a new dataset (and optionally an export) whose media are the anonymized copies."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import schema
from .report import JobReport


def anonymized_view(sample_collection, output_field: str = schema.DEFAULT_OUTPUT_FIELD,
                    error_field: str = schema.DEFAULT_ERROR_FIELD):
    """The samples whose anonymized copy was written successfully and still exists."""
    from fiftyone import ViewField as F

    if not sample_collection.has_field(output_field):
        raise ValueError(f"no field '{output_field}': run anonymize_images first")
    view = sample_collection.exists(output_field)
    if sample_collection.has_field(error_field):
        view = view.match(F(error_field) == None)  # noqa: E711 (a MongoDB expression)
    ids, copies = view.values(["id", output_field])
    present = [sid for sid, copy in zip(ids, copies) if copy and os.path.isfile(copy)]
    return view.select(present, ordered=True)


@schema.guarded
def share_anonymized(
    sample_collection,
    name: str | None = None,
    label_fields: Sequence[str] | None = None,
    export_dir: str | os.PathLike | None = None,
    dataset_type: str = "FiftyOneDataset",
    output_field: str = schema.DEFAULT_OUTPUT_FIELD,
    error_field: str = schema.DEFAULT_ERROR_FIELD,
    persistent: bool = True,
    overwrite: bool = False,
):
    """Clone the anonymized samples into a new dataset whose ``filepath`` is the copy.

    Only the label fields in ``label_fields`` are kept (default: every label field), and no
    field that points at an original survives. With ``export_dir`` the clone is also exported
    in a FiftyOne export format (e.g. ``"FiftyOneDataset"``, ``"COCODetectionDataset"``).
    Returns ``(dataset, report)``.
    """
    import fiftyone as fo
    import fiftyone.core.labels as fol

    view = anonymized_view(sample_collection, output_field, error_field)
    report = JobReport("share", samples=len(sample_collection), processed=len(view))
    report.skipped = report.samples - report.processed
    if name is None:
        name = f"{sample_collection._dataset.name}-anonymized"
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"a dataset named '{name}' already exists (set overwrite to replace it)")
        fo.delete_dataset(name)
    shared = view.clone(name, persistent=persistent)
    shared.set_values("filepath", shared.values(output_field))

    field_schema = shared.get_field_schema()
    label_schema = {k for k, v in field_schema.items()
                    if isinstance(v, fo.EmbeddedDocumentField) and issubclass(v.document_type, fol.Label)}
    keep = set(label_fields) if label_fields is not None else label_schema
    unknown = keep - label_schema
    if unknown:
        raise ValueError(f"label field(s) not on the dataset: {sorted(unknown)}")
    ours = {output_field, schema.fingerprint_field(output_field), error_field}
    drop = (label_schema - keep) | {f for f in ours if f in field_schema}
    for fld in sorted(drop):
        shared.delete_sample_field(fld)
    shared.app_config.media_fields = ["filepath"]
    shared.app_config.grid_media_field = "filepath"
    shared.app_config.modal_media_field = "filepath"
    shared.info["anonymized_from"] = sample_collection._dataset.name
    shared.save()
    shared.compute_metadata(overwrite=True)

    if export_dir is not None:
        export_type = getattr(fo.types, dataset_type, None)
        if export_type is None:
            raise ValueError(f"unknown export format '{dataset_type}'")
        kwargs: dict[str, Any] = {"export_dir": str(export_dir), "dataset_type": export_type}
        kept = sorted(keep)
        if dataset_type != "FiftyOneDataset" and kept:
            kwargs["label_field"] = kept[0] if len(kept) == 1 else kept
        shared.export(**kwargs)
        report.extra["export_dir"] = str(export_dir)
    report.extra.update(dataset=name, label_fields=sorted(keep))
    return shared, report
