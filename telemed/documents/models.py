"""Document table and its data models."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from telemed.db import StrEnumType, UTCDateTime, new_id


class DocumentKind(StrEnum):
    DISCHARGE_SUMMARY = "discharge_summary"
    DOCTOR_CONCLUSION = "doctor_conclusion"
    ULTRASOUND = "ultrasound"
    MRI = "mri"
    CT = "ct"
    LAB_RESULTS = "lab_results"
    OTHER = "other"


class Document(SQLModel, table=True):
    """A file in a patient's cabinet. The bytes live under the data dir, named by ``id``."""

    __tablename__ = "document"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    owner_id: uuid.UUID = Field(foreign_key="user_account.id", index=True)
    kind: DocumentKind = Field(sa_type=StrEnumType(DocumentKind, 32))
    title: str = Field(max_length=200)
    file_name: str = Field(max_length=255)
    content_type: str = Field(max_length=64)
    size: int
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)


class DocumentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner_id: uuid.UUID
    kind: DocumentKind
    title: str
    file_name: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime
