"""The medical document cabinet: upload, type checks, storage, access and audit."""
