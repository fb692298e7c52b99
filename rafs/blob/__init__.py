"""Nydus data blobs: the on-disk format (``ondisk``), the writer and the readers.

Spec: ../shared/spec/blob.md. Chunking and dedup, which decide *what* goes into a blob, live in
``rafs.chunker``; the writer here only places chunks and writes sections.
"""
