"""DICOM files: a series' stored pixels written as one single-frame MR file per slice, with
deterministic UIDs hashed from (seed, study, series, instance)."""
from __future__ import annotations

import pathlib

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_ROOT_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from harness.data.demo.geometry import Series, _mm
from harness.data.demo.marker import DEMO_VERSION

UID_NAMESPACE = "rsna-harness demo"


def _uid(*parts) -> str:
    # A hash of the parts under pydicom's root: prefix=None would ignore the entropy and return a
    # random UUID. One joined string, since generate_uid concatenates its sources unseparated.
    return generate_uid(PYDICOM_ROOT_UID, entropy_srcs=["/".join(map(str, (UID_NAMESPACE, *parts)))])


IMPLEMENTATION_UID = _uid("implementation")  # one per generator, written into every file's meta


def _write_series(folder: pathlib.Path, series: Series, pixels: list[np.ndarray], study_id: int,
                  seed: int) -> None:
    folder.mkdir(parents=True)
    uids = dict(StudyInstanceUID=_uid(seed, study_id), FrameOfReferenceUID=_uid(seed, study_id, "frame"),
                SeriesInstanceUID=_uid(seed, study_id, series.series_id))
    for k, image in enumerate(pixels):
        instance = series.instance(k)
        ds = _slice_dataset(series, k, image, _uid(seed, study_id, series.series_id, instance))
        ds.PatientID = str(study_id)
        for tag, uid in uids.items():
            setattr(ds, tag, uid)
        ds.save_as(folder / f"{instance}.dcm", enforce_file_format=True)


def _slice_dataset(series: Series, k: int, image: np.ndarray, sop_uid: str) -> Dataset:
    """Spatial slice k of the series as a single-frame MR image (without the study's UIDs)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"RSNA_HARNESS_{DEMO_VERSION}"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MR"
    ds.SeriesDescription = series.description
    ds.SeriesNumber = series.number
    ds.InstanceNumber = series.instance(k)
    ds.ImagePositionPatient = [_mm(v) for v in series.position(k)]
    ds.ImageOrientationPatient = [_mm(v) for v in series.orientation]
    ds.PixelSpacing = [_mm(series.pixel_spacing)] * 2
    ds.SliceThickness = _mm(series.thickness)
    ds.SpacingBetweenSlices = _mm(series.spacing)
    ds.WindowCenter = round(0.45 * series.scale, 1)  # shows 0 .. 0.9 of the CSF level
    ds.WindowWidth = round(0.9 * series.scale, 1)
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = image.astype("<u2").tobytes()
    return ds
