"""Nydus RAFS format library: trees, tar reading, chunking, blobs, v5 and v6 bootstraps.

Pure: functions take bytes and file objects, never paths or sockets.
"""
