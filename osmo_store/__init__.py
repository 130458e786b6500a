"""osmo_store: a content-addressed, deduplicating, versioned dataset store.

Files are cut into content-defined chunks (FastCDC), named by BLAKE3, packed into pack objects and kept
in a blob store (local folder; S3 and Azure later). Every version of every dataset is kept; every
distinct chunk is stored once. See docs/ARCHITECTURE.md for the layers and docs/FORMAT.md for the bytes.
"""

__version__ = "0.1.0"
