"""Zran (``targz-ref``): Nydus blobs whose data is the original gzip layer.

Spec: ../shared/spec/blob.md §6.3, §12; image.md §11. ``zlib`` binds the inflate calls,
``index`` finds checkpoints while the layer is read, ``chunker`` maps tar files to chunks,
``ondisk`` encodes contexts and ci entries, ``refblob`` writes the small ref blob, ``reader``
reads chunks back. Errors are ``rafs.errors``.
"""
