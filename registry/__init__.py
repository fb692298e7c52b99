"""The OCI side: references, manifests, auth and the registry / layout / archive media."""
