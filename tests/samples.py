"""Real medical-document files, made by the tests: PDF, JPEG, PNG and DICOM Part 10."""

from __future__ import annotations

import io
import random
import struct

import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def pdf(text: str = "Discharge summary", pages: int = 1) -> bytes:
    """A small, valid PDF (with a correct cross-reference table)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(pages))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    font_id = 3 + 2 * pages
    for i in range(pages):
        content = f"BT /F1 18 Tf 72 720 Td ({text} {i + 1}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def _picture(width: int, height: int) -> Image.Image:
    pixels = bytes(
        (x * 255 // width, y * 255 // height, 128)[c]
        for y in range(height)
        for x in range(width)
        for c in range(3)
    )
    return Image.frombytes("RGB", (width, height), pixels)


def jpeg(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    _picture(width, height).save(out, format="JPEG", quality=90)
    return out.getvalue()


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    _picture(width, height).save(out, format="PNG")
    return out.getvalue()


def noisy_png(size_bytes: int) -> bytes:
    """A PNG of at least ``size_bytes`` (random pixels do not compress)."""
    side = int((size_bytes / 3) ** 0.5) + 8
    pixels = random.Random(7).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, format="PNG")
    return out.getvalue()


def dicom() -> bytes:
    """A DICOM Part 10 file (preamble, DICM, file meta) with a small CT-like image."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.preamble = b"\0" * 128
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientName = "Test^Patient"
    dataset.Modality = "CT"
    dataset.Rows, dataset.Columns = 16, 16
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = struct.pack("<256H", *range(256))
    out = io.BytesIO()
    pydicom.dcmwrite(out, dataset, enforce_file_format=True)
    return out.getvalue()


def executable() -> bytes:
    """A real program from this machine (an ELF binary)."""
    with open("/bin/true", "rb") as handle:
        return handle.read()


def referral_table(rows: int, *, first_phone: int = 0, profile: str = "кардиология") -> bytes:
    """A referral table (CSV, UTF-8) of ``rows`` different new patients, each with a
    phone of its own (``+7915…`` from ``first_phone``), referred to ``profile``."""
    header = (
        "ФИО;Дата рождения;Телефон;Email;Код МКБ-10;Диагноз;"
        "Направившая организация;Направивший врач;Профиль"
    )
    lines = [header]
    for n in range(rows):
        lines.append(
            f"Пациентов Тест {n};{1950 + n % 50}-0{1 + n % 9}-1{n % 10};"
            f"+7915{first_phone + n:07d};;I{10 + n % 80}.{n % 10};Гипертония;"
            f"ГБУЗ СО «Сысертская ЦРБ»;Мельников Артём Сергеевич;{profile}"
        )
    return ("\r\n".join(lines) + "\r\n").encode()
