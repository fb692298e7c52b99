"""The OCI side: references, manifests, auth and the registry / layout / archive media.

Entry points (see each module for the spec sections it implements):

* ``medium.open_image(spec)`` / ``medium.write_image(obj, spec)`` / ``medium.copy_image``:
  ``REF`` or ``docker://REF``, ``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``,
  ``docker-archive:FILE[:REF]`` (the two archives share ``tarlayout``: read in place);
* ``model``: ``Image``, ``Index``, ``Layer``, ``Descriptor``, ``Platform`` — one model for
  every medium, manifests kept as their original bytes;
* ``build``: ``Blob``, ``build_image``, ``build_index`` to assemble new images;
* ``reference.parse_reference``, ``mediatype``, ``digest``;
* ``client.RegistryClient`` with ``options.RegistryOptions``: the distribution API, on top of
  ``transport`` (scheme per host, auth, retries, redirects: the only httpx user);
* ``errors.RegistryError`` and its subclasses, the one exception base of this package.
"""
